#!/bin/bash
# The GPU benchmarks, in stages that each fit one 10-minute call of the device machine (see BENCHMARKS.md,
# "GPU runs"). Results go to $OUT when it is set (the device tool brings that folder back), else bench/results.
#
#   bash bench/gpu_batch.sh checks      # cuda tests, overhead in bf16 (eager + compile, tokens/s, MFU), coord check
#   bash bench/gpu_batch.sh width-sp    # width transfer, sp, widths 256..2048
#   bash bench/gpu_batch.sh width-mup   # width transfer, mup
#   bash bench/gpu_batch.sh depth-gpt   # depth transfer on the GPT, depths 2..16
#   bash bench/gpu_batch.sh lion-sp     # Lion width transfer (normal readout/query init), sp, widths 256..2048
#   bash bench/gpu_batch.sh lion-mup    # the same under mup
#
# The device image has torch but not hydra-core, optuna or mup: the benchmarks need none of them, the mup
# column of the overhead table needs mup (carry its wheel in .wheels/, listed in .git/info/exclude).
set -eu
cd "$(dirname "$0")/.."
export HPT_BENCH_RESULTS="${OUT:-$PWD/bench/results}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
if [ -d .wheels ]; then "$PY" -m pip install -q --no-index --find-links .wheels --no-deps mup || true; fi
width=(--widths 256 512 1024 2048 --steps 1000 --batch 32 --seq 128 --start -8)
case "${1:-checks}" in
  checks)
    "$PY" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider 2>&1 | tee "$HPT_BENCH_RESULTS/cuda_tests.txt"
    (cd bench && "$PY" overhead.py --width 1024 --depth 8 --batch 16 --seq 1024 --dtype bf16 --repeats 11)
    (cd bench && "$PY" coord_check_time.py) ;;
  width-sp) (cd bench && "$PY" width_transfer.py --schemes sp "${width[@]}" --tag sp) ;;
  width-mup) (cd bench && "$PY" width_transfer.py --schemes mup "${width[@]}" --tag mup) ;;
  lion-sp) (cd bench && "$PY" width_transfer.py --schemes sp "${width[@]}" --optimizer lion --no-zero-init \
             --start -10 --tag lion-sp) ;;
  lion-mup) (cd bench && "$PY" width_transfer.py --schemes mup "${width[@]}" --optimizer lion --no-zero-init \
              --start -10 --tag lion-mup) ;;
  depth-gpt) (cd bench && "$PY" depth_transfer.py --models gpt --width 256 --depths 2 4 8 16 --steps 1000 --tag gpu) ;;
  *) echo "unknown stage ${1}: use checks, width-sp, width-mup, lion-sp, lion-mup or depth-gpt" >&2; exit 2 ;;
esac
