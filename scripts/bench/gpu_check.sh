#!/usr/bin/env bash
# The GPU check of issue 25 as one command for a lent GPU machine (the `device` tool's `run`), about 5 minutes.
#
# The device image has torch, timm, tensorboard, pillow and tqdm but not MONAI, Ignite, nibabel, pydicom or fire.
# Once, here (PyPI works here, not there), in the repository root:
#     echo /.whl/ >> .git/info/exclude
#     bash scripts/bench/gpu_check.sh --fetch          # wheels for Python 3.12 into .whl/ (a few MB)
# Then one device call, carrying .whl:
#     run(command="bash scripts/bench/gpu_check.sh", carry=[".whl"], timeout_s=540)
# It writes speed_gpu.json/.md (bundle trainer vs hand loop, AMP, channels_last, num_workers, one-GPU torchrun) and
# scale_loader_gpu.json/.md (the loader on that machine's cores) into $OUT (default benchmarks/results); copy them to
# benchmarks/results and run `python -m scripts.bench.make_report`.
set -euo pipefail
WHEELS="monai==1.6.1 pytorch-ignite==0.5.5 nibabel==5.4.2 pydicom==3.0.2 fire==0.7.1 termcolor==3.3.0"
if [[ "${1:-}" == "--fetch" ]]; then
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl $WHEELS
    exit 0
fi
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 MONAI_TRANSFER_BENCH_CACHE=/tmp/bench_cache
OUT="${OUT:-benchmarks/results}"
nvidia-smi --query-gpu=name,memory.total --format=csv || true
python3 -m scripts.bench.speed_gpu --torchrun --output "$OUT/speed_gpu.json" 2>&1 | grep -v "caching\|Epoch \[" | tail -40
python3 -m scripts.bench.scale_loader --count 4096 --output "$OUT/scale_loader_gpu.json" 2>&1 | tail -15
