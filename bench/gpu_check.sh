#!/usr/bin/env bash
# Issue 31, item 5: the coefficient step on a GPU against its FLOP floor, and `auto` against the best strategy,
# at the issue's synthetic Llama shapes (bf16, 2,048 tokens per step). Prepared to run once on a lent machine:
#   bash bench/gpu_check.sh            (from the repository root; writes $OUT/gpu_check.log when $OUT is set)
# It needs only torch and transformers (the device image has both); the package is read from src/.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
log="${OUT:-/tmp}/gpu_check.log"
python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))' | tee "$log"
for shape in "--hidden 4096 --intermediate 14336 --layers 4 --heads 32" \
             "--hidden 2048 --intermediate 8192 --layers 16 --heads 32"; do
  for cell in "--rank 16 --k 10" "--rank 64 --k 10 30"; do
    # shellcheck disable=SC2086 # the shapes are word lists on purpose
    python3 bench/merge_step.py --device cuda --dtype bf16 --tokens 2048 --repeats 10 $shape $cell 2>&1 | tee -a "$log"
  done
done
