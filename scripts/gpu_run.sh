#!/usr/bin/env bash
# One call on the GPU machine, from the repository root (suite about 9 minutes, bench about 1-2;
# the two together exceed one 10-minute call: SKIP_BENCH=1 for one, SKIP_TESTS=1 for the other):
#   1. numpy 2.4.x from the carried wheel (.whl/, ignored by git: carry it),
#      because the image's numpy 2.5 breaks numba-cuda (np.row_stack is gone);
#   2. nvidia-smi and the versions in use;
#   3. the test suite with the CUDA backend on the real GPU (--gpu);
#   4. benchmarks.gpu (validate on slices, then time W-GPU), JSON and logs to $OUT.
# The summary table of the benchmark is the last thing printed.
# Usage there: bash scripts/gpu_run.sh            (OUT defaults to /tmp/gpu_out)
#              BENCH_ARGS=--quick bash scripts/gpu_run.sh
#              SASS=1 TESTS=tests/test_cuda_mma.py bash scripts/gpu_run.sh
#                (SASS of the tensor-core and encode kernels first; only the named tests)
#              PART=1 SKIP_BENCH=1 bash scripts/gpu_run.sh, then PART=2 SKIP_BENCH=1 ...
#                (the whole suite in two calls of about 8 and 7 minutes: PART=2 is the
#                Hypothesis properties, golden, README and verify tests, PART=1 the rest)
#              XDIST=8 SKIP_BENCH=1 bash scripts/gpu_run.sh
#                (the whole suite in 8 processes, pytest-xdist: its and execnet's wheels in .whl/)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

echo "== nvidia-smi"
nvidia-smi 2>&1 | tee "$OUT/nvidia-smi.txt" | head -20
python3 - <<'EOF' 2>&1 | tee "$OUT/versions.txt"
import platform, numpy, numba, numba_cuda
from numba import cuda
print("python", platform.python_version(), "numpy", numpy.__version__, numpy.__file__)
print("numba", numba.__version__, "numba-cuda", numba_cuda.__version__)
print("device", cuda.get_current_device().name, cuda.get_current_device().compute_capability)
EOF

if [ -n "$SASS" ]; then
  echo "== SASS of the mma scoring kernel ($OUT/sass/mma_scores.sass)"
  timeout 120 python3 -m benchmarks.gpu --sass "$OUT/sass" 2>&1 | tail -n 20
fi

SLOW_FILES="tests/test_golden.py tests/test_properties.py tests/test_readme.py tests/test_verify.py"
case "$PART" in
  1) TESTS=${TESTS:-$(ls tests/test_*.py | grep -v -F -x -f <(tr ' ' '\n' <<< "$SLOW_FILES") | tr '\n' ' ')} ;;
  2) TESTS=${TESTS:-$SLOW_FILES} ;;
esac

if [ -z "$SKIP_TESTS" ]; then
  echo "== tests on the GPU (log: $OUT/pytest.log)"
  timeout ${TEST_TIMEOUT:-560} python3 -m pytest -x -q ${TESTS:-tests} -m "not slow" --gpu -p no:cacheprovider \
    ${XDIST:+-n $XDIST} > "$OUT/pytest.log" 2>&1
  echo "pytest exit code $?"
  tail -n 25 "$OUT/pytest.log"
fi

if [ -n "$PROFILE" ]; then      # PROFILE="scores32 encode16": Nsight Compute on one launch each
  # PROFILE_VARIANT: a scoring variant's label (benchmarks.gpu), e.g. "mma contiguous";
  # NCU_ARGS: more ncu options, e.g. "--section MemoryWorkloadAnalysis_Tables --metrics breakdown:...",
  # split at spaces and not globbed (set -f), so metric regexes may hold * and ?
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  for what in $PROFILE; do
    echo "== ncu $what (log: $OUT/ncu_$what.txt)"
    case $what in scoresmma) k=polar_scores_mma ;; scores*) k=polar_scores ;; *) k=polar_encode ;; esac
    set -f
    timeout 150 "$NCU" --clock-control none -k "regex:$k" --launch-skip 1 --launch-count 1 \
      --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
      --section WarpStateStats --section Occupancy --section LaunchStats --section InstructionStats \
      $NCU_ARGS python3 -m benchmarks.gpu --profile "$what" ${PROFILE_VARIANT:+--variant "$PROFILE_VARIANT"} \
      > "$OUT/ncu_$what.txt" 2>&1
    rc=$?
    set +f
    echo "ncu exit code $rc"
    grep -vE "^ *-+ +-+|^ *$|^    (OPT|INF)|^          " "$OUT/ncu_$what.txt" | cut -c1-110 | tail -n +3 | head -${NCU_LINES:-90}
  done
fi

if [ -z "$SKIP_BENCH" ]; then
  echo "== benchmark (log: $OUT/bench.log, numbers: $OUT/gpu.json)"
  # eval: BENCH_ARGS may quote labels with spaces, e.g. --also "mma v2.2,mma gpb8" (and, being
  # eval'd, runs any shell in it: a developer's script, not for untrusted input)
  eval "timeout ${BENCH_TIMEOUT:-200} python3 -m benchmarks.gpu --json \"\$OUT/gpu.json\" $BENCH_ARGS" > "$OUT/bench.log" 2>&1
  echo "benchmark exit code $?"
  tail -n 60 "$OUT/bench.log"
fi
