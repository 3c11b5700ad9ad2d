#!/usr/bin/env bash
# Set everything up, then run the main job: LeNet-5 on Fashion-MNIST (Debian's
# dataset-fashion-mnist) trained with fp32, bf16 and two approximate multipliers on a short
# schedule, compared in a table and a plot. Results land in runs/demo/ (DEMO_OUT to change).
#
#   DEMO_EPOCHS   epochs per run (default 2)
#   DEMO_SAMPLES  training images per epoch (default 12000 of 60000; 0 = all)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT="${DEMO_OUT:-runs/demo}"
EPOCHS="${DEMO_EPOCHS:-2}"
SAMPLES="${DEMO_SAMPLES:-12000}"
A=.venv/bin/approxsim
extra=()
if [ "$SAMPLES" != "0" ]; then extra+=(--max-train-samples "$SAMPLES"); fi
mkdir -p "$OUT"
for mult in fp32 bf16 mitchell7 mbm7; do
    echo "== training lenet5 with $mult"
    # --resume continues a run that was interrupted and skips one that is complete.
    $A train --model lenet5 --dataset fashion-mnist --multiplier "$mult" --epochs "$EPOCHS" \
        --seed 0 --out "$OUT/lenet5-$mult" --resume "${extra[@]}"
done
$A compare "$OUT"/lenet5-fp32 "$OUT"/lenet5-bf16 "$OUT"/lenet5-mitchell7 "$OUT"/lenet5-mbm7 \
    --baseline "$OUT"/lenet5-fp32 --plot "$OUT/curves.png" --overwrite
$A multipliers show mitchell7 --plot "$OUT/mitchell7-error.png" --overwrite > /dev/null
echo "demo: results in $OUT (metrics.jsonl and config.json per run, curves.png, mitchell7-error.png)"
