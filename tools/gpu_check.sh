#!/usr/bin/env bash
# GPU check: SMPLify and training-step benchmarks on CUDA, tables on stdout (< 5 min).
#
# Run it whenever a machine with an NVIDIA GPU is available, from the repository root, with a
# Python that has torch (CUDA) and this package's dependencies:
#     bash tools/gpu_check.sh            # PYTHON=... to choose the interpreter
# The training benchmark uses configs/synthetic_spin.yaml's data (data/synthetic; generated
# first if missing, which needs the rendering dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO GPU VISIBLE')"
echo "== SMPLify, batch 64, full open model =="
"$PYTHON" tools/bench_smplify.py --device cuda
echo "== SMPLify, batch 512 =="
"$PYTHON" tools/bench_smplify.py --device cuda --batch 512 --methods fast,lm,anchored \
    --inits "noisy truth"
echo "== training step, regression-only vs in-loop =="
"$PYTHON" tools/bench_train.py --steps 20 --warmup 5 device=cuda
