#!/usr/bin/env bash
# Train the runs behind docs/results.md: LeNet-300-100 and LeNet-5 on Fashion-MNIST with
# fp32, bf16, bf16_trunc, mitchell7 and mbm7, seeds 0, 1 and 2, then print the table of final
# test accuracy (mean ± std over the seeds). Every run is resumable: rerunning the script
# continues interrupted runs and skips finished ones.
#
#   RESULTS_OUT     run folders (default runs/results)
#   RESULTS_EPOCHS  epochs per run (default 10)
#   RESULTS_MODELS  models (default "lenet300100 lenet5")
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${RESULTS_OUT:-runs/results}"
EPOCHS="${RESULTS_EPOCHS:-10}"
MODELS="${RESULTS_MODELS:-lenet300100 lenet5}"
MULTS="fp32 bf16 bf16_trunc mitchell7 mbm7"
A=.venv/bin/approxsim
mkdir -p "$OUT"
runs=()
for model in $MODELS; do
    # Seed-major order: a partial run of the script already covers every multiplier.
    for seed in 0 1 2; do
        for mult in $MULTS; do
            dir="$OUT/$model-$mult-s$seed"
            runs+=("$dir")
            echo "== $model $mult seed $seed"
            $A train --model "$model" --dataset fashion-mnist --multiplier "$mult" \
                --epochs "$EPOCHS" --seed "$seed" --out "$dir" --resume --no-progress
        done
    done
done
$A compare --group-seeds "${runs[@]}"
