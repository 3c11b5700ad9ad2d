#!/usr/bin/env bash
# The runs behind docs/results-int8.md: float LeNets on Fashion-MNIST (the fp32 runs of
# scripts/results.sh), post-training quantization with every listed integer multiplier, then
# fine-tuning from each float run (2 epochs, lr 0.01):
#
#   control  float32 fine-tuned with the same schedule (both LeNets, seeds 0-2)
#   ste      every listed design with the `ste` backward, seed 0, LeNet-5 then LeNet-300-100
#            (in the order of `approxsim multipliers list --kind int`); LeNet-5 with the four
#            designs of the first round also with seeds 1 and 2
#   lut      LeNet-5, the four designs of the first round with the `lut` backward, seeds 0-2
#   lut8     the same with --lut-step 8 (a difference stencil 8 codes either side)
#
# Every step resumes or skips what is done, so the script can be rerun after an interruption;
# a run that stopped on non-finite values is reported and left out, not retried. The stages
# can be run apart (for instance two at once on two cores):
#
#   bash scripts/results_int8.sh [float] [ptq] [control] [ste] [lut] [lut8] [report]
#
# (default: all of them, in this order)
#   RESULTS_OUT  run folders (default runs/results; fine-tunings in runs/results-int8)
#   LUT_DESIGNS  the designs of the lut stages (default: the four of the first round)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${RESULTS_OUT:-runs/results}"
TUNED="$OUT-int8"
A=.venv/bin/approxsim
FIRST_ROUND="drum4_u8 mitchell_u8 trunc8_s8 bam_h3v8_s8"
stages=("$@")
if [ ${#stages[@]} -eq 0 ]; then stages=(float ptq control ste lut lut8 report); fi

# fine_tune MODEL SEED DIR ARGS...: one 2-epoch fine-tuning from the seed's float run. A run
# that failed (non-finite values) gets DIR/stopped.txt and is not retried.
fine_tune() {
    local model=$1 seed=$2 dir=$3
    shift 3
    if [ -e "$dir/stopped.txt" ]; then
        echo "results_int8: $dir stopped earlier (left out)" >&2
        return
    fi
    if ! $A train --model "$model" --dataset fashion-mnist --init-from "$OUT/$model-fp32-s$seed" \
        --epochs 2 --lr 0.01 --seed "$seed" --out "$dir" --resume --no-progress "$@" \
        2> >(tee "$dir.err" >&2); then
        echo "results_int8: $dir stopped (left out)" >&2
        mkdir -p "$dir" && tail -n 3 "$dir.err" > "$dir/stopped.txt"
    fi
    rm -f "$dir.err"
}

for stage in "${stages[@]}"; do
    case "$stage" in
    float)
        for seed in 0 1 2; do
            for model in lenet5 lenet300100; do
                $A train --model "$model" --dataset fashion-mnist --multiplier fp32 --epochs 10 \
                    --seed "$seed" --out "$OUT/$model-fp32-s$seed" --resume --no-progress
            done
        done
        ;;
    ptq) .venv/bin/python scripts/results_int8.py ptq --runs "$OUT" --out docs/results ;;
    control)
        for seed in 0 1 2; do
            for model in lenet5 lenet300100; do
                fine_tune "$model" "$seed" "$TUNED/$model-fp32-ft-s$seed" --multiplier fp32
            done
        done
        ;;
    ste)
        # LeNet-5 first: LeNet-300-100's quantized layers train several times slower here.
        for seed in 1 2; do
            for mult in $FIRST_ROUND; do
                fine_tune lenet5 "$seed" "$TUNED/lenet5-$mult-ste-s$seed" \
                    --int-multiplier "$mult" --grad ste
            done
        done
        for model in lenet5 lenet300100; do
            for mult in $($A multipliers list --kind int | awk '{print $1}'); do
                fine_tune "$model" 0 "$TUNED/$model-$mult-ste-s0" --int-multiplier "$mult" \
                    --grad ste
            done
        done
        ;;
    lut | lut8)
        step=()  # the default stencil (1 code) is left unnamed, as in the first round's runs
        if [ "$stage" = lut8 ]; then step=(--lut-step 8); fi
        for seed in 0 1 2; do
            for mult in ${LUT_DESIGNS:-$FIRST_ROUND}; do
                fine_tune lenet5 "$seed" "$TUNED/lenet5-$mult-$stage-s$seed" \
                    --int-multiplier "$mult" --grad lut "${step[@]}"
            done
        done
        ;;
    report)
        .venv/bin/python scripts/results_int8.py finetune --runs "$OUT" --tuned "$TUNED" \
            --out docs/results
        ;;
    *)
        echo "results_int8: unknown stage $stage (float, ptq, control, ste, lut, lut8, report)" >&2
        exit 2
        ;;
    esac
done
