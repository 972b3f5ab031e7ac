#!/usr/bin/env bash
# The CUDA checks, where torch sees a GPU, in order: the CUDA variants of the tests (pytest marker
# `cuda`), the update's device profile (one seed, then 64 seeds stacked as skills.train --seeds runs them),
# then the benchmark with both algorithms on the GPU.
#   bash bench/cuda.sh [OUT_DIR]     (default: bench/results)
# Writes cuda_tests.log, device_profile_cuda{,_stacked64}.{json,txt,log} and throughput_cuda.{json,log} with
# throughput_cuda_time_to_95.png. PYTHON names the interpreter (default: python). LIMIT_S caps
# the whole run in seconds (default: none): each phase gets its share of what is left, is
# interrupted (SIGINT) when over, and the benchmark's JSON keeps the sections it finished.
set -uo pipefail
out=${1:-bench/results}
py=${PYTHON:-python}
limit=${LIMIT_S:-0}
mkdir -p "$out"
"$py" -c "import torch, sys; torch.cuda.is_available() or sys.exit('torch sees no CUDA device')" || exit 2

# seconds for the next phase: at most $1, and what is left of LIMIT_S less $2 kept for later phases
share() {
    if ((limit == 0)); then echo 0; return; fi
    local left=$((limit - SECONDS - $2))
    ((left < 10)) && left=10
    echo $((left < $1 ? left : $1))
}
run_for() { local seconds=$1; shift; timeout -s INT -k 15 "$seconds" "$@"; }

{ nvidia-smi 2>&1 | head -15; "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } \
    > "$out/cuda_tests.log"
run_for "$(share 200 300)" "$py" -m pytest -m cuda -q -rs tests 2>&1 | tee -a "$out/cuda_tests.log"
tests=$?
run_for "$(share 60 240)" "$py" -m bench.device_profile --device cuda --json "$out/device_profile_cuda.json" 2>&1 \
    | tee "$out/device_profile_cuda.log"
profile=$?
run_for "$(share 90 200)" "$py" -m bench.device_profile --device cuda --stacked-seeds 64 \
    --json "$out/device_profile_cuda_stacked64.json" 2>&1 | tee "$out/device_profile_cuda_stacked64.log"
stacked=$?
run_for "$(share 100000 5)" "$py" -m bench.throughput --device cuda --budget-steps 20000 \
    --json "$out/throughput_cuda.json" 2>&1 | tee "$out/throughput_cuda.log"
bench=$?
echo "cuda tests exit $tests, device profile exit $profile, stacked profile exit $stacked, benchmark exit $bench" \
    "(124: over its time share)"
exit $((tests || profile || stacked || bench))
