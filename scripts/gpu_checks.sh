#!/usr/bin/env bash
# Chapter 10's checks on a machine with an NVIDIA GPU, CUDA torch and CuPy, in one go:
#   1. the kernel tests, GPU-marked ones included (each kernel against its reference);
#   2. benchmarks/bench_kernels.py (timings, bytes, fraction of copy bandwidth, speed-up).
# MODES="dlpack pointer" runs both for each way of handing tensors to the kernels
# (MINIDECODE_KERNEL_ARGS; default: dlpack only). Logs and results files go to $OUT (default:
# /tmp/minidecode-gpu). Copy a kernels-MODE.json to benchmarks/results/kernels.json and re-render
# RESULTS.md from it:
#   python benchmarks/bench_kernels.py --from-json benchmarks/results/kernels.json --write-results
# Runs from the repository root with whatever python3 holds torch and CuPy; minidecode is used
# from the working tree (PYTHONPATH), so nothing is installed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/minidecode-gpu}"
MODES="${MODES:-dlpack}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg

{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    python3 -c "import torch, cupy; print('torch', torch.__version__, 'CUDA', torch.version.cuda,
'| cupy', cupy.__version__, '|', torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/environment.txt"

status=0
for mode in $MODES; do
    export MINIDECODE_KERNEL_ARGS="$mode"
    echo "=== [$mode] pytest tests/test_kernels.py (GPU tests included)"
    timeout 200 python3 -m pytest -q -p no:cacheprovider --tb=short -W ignore::DeprecationWarning \
        tests/test_kernels.py 2>&1 | tee "$OUT/pytest-$mode.log" | tail -n 30
    status=$(( status || $? ))
    echo "=== [$mode] benchmarks/bench_kernels.py"
    timeout 200 python3 benchmarks/bench_kernels.py --out "$OUT/kernels-$mode.json" "$@" \
        2>&1 | tee "$OUT/bench-$mode.log"
    status=$(( status || $? ))
done
echo "=== exit $status"
exit "$status"
