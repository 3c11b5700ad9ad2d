#!/usr/bin/env bash
# The runs behind docs/results-int8.md: float LeNets on Fashion-MNIST (the fp32 runs of
# scripts/results.sh), post-training quantization with every listed integer multiplier, then
# quantization-aware fine-tuning of LeNet-5 with four of them (2 epochs, lr 0.01; the `ste`
# backward with seeds 0-2, the `lut` backward with seed 0). Every step resumes or skips what is
# done, so the script can be rerun after an interruption.
#
#   RESULTS_OUT  run folders (default runs/results; fine-tunings in runs/results-int8)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${RESULTS_OUT:-runs/results}"
A=.venv/bin/approxsim
for seed in 0 1 2; do
    for model in lenet5 lenet300100; do
        $A train --model "$model" --dataset fashion-mnist --multiplier fp32 --epochs 10 \
            --seed "$seed" --out "$OUT/$model-fp32-s$seed" --resume --no-progress
    done
done
.venv/bin/python scripts/results_int8.py --runs "$OUT" --out docs/results
TUNED="$OUT-int8"
runs=()
for grad in ste lut; do
    seeds="0 1 2"
    if [ "$grad" = lut ]; then seeds="0"; fi
    for seed in $seeds; do
        for mult in drum4_u8 mitchell_u8 trunc8_s8 bam_h3v8_s8; do
            dir="$TUNED/lenet5-$mult-$grad-s$seed"
            # A run that stopped on non-finite values is reported and left out, not retried.
            if $A train --model lenet5 --dataset fashion-mnist --int-multiplier "$mult" \
                --grad "$grad" --init-from "$OUT/lenet5-fp32-s$seed" --epochs 2 --lr 0.01 \
                --seed "$seed" --out "$dir" --resume --no-progress; then
                runs+=("$dir")
            fi
        done
    done
done
$A compare --group-seeds "${runs[@]}"
