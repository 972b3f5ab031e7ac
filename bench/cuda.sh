#!/usr/bin/env bash
# The CUDA checks, where torch sees a GPU: the CUDA variants of the tests (pytest marker `cuda`),
# then the benchmark with both algorithms on the GPU.
#   bash bench/cuda.sh [OUT_DIR]     (default: bench/results; writes cuda_tests.log, throughput_cuda.*)
# PYTHON names the interpreter (default: python).
set -uo pipefail
out=${1:-bench/results}
py=${PYTHON:-python}
mkdir -p "$out"
"$py" -c "import torch, sys; torch.cuda.is_available() or sys.exit('torch sees no CUDA device')" || exit 2
"$py" -m pytest -m cuda -q -rs tests 2>&1 | tee "$out/cuda_tests.log"
tests=$?
"$py" -m bench.throughput --device cuda --budget-steps 20000 --json "$out/throughput_cuda.json" 2>&1 \
    | tee "$out/throughput_cuda.log"
bench=$?
echo "cuda tests exit $tests, benchmark exit $bench"
exit $((tests || bench))
