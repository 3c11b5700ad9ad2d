#!/usr/bin/env bash
# The runs behind docs/results-int8.md: float LeNets on Fashion-MNIST (the fp32 runs of
# scripts/results.sh), post-training quantization with every listed integer multiplier, then
# fine-tuning from each float run (2 epochs, lr 0.01):
#
#   control  float32 fine-tuned with the same schedule (both LeNets, seeds 0-2)
#   ste      every listed design with the `ste` backward, seeds 0-2, LeNet-5 then LeNet-300-100
#            (in the order of `approxsim multipliers list --kind int`)
#   lut      the same with the `lut` backward (1-code stencil)
#   lut8     `--lut-step 8` (a difference stencil 8 codes either side): the models of
#            LUT8_MODELS (default lenet5 lenet300100) and the designs of LUT8_DESIGNS (default
#            drum6_u8 bam_h3v8_u8 drum4_u8 bam_h2v6_u8 bam_h4v9_u8: unsigned designs whose
#            1-code tables fail with affine codes), seeds 0-2
#
# Every step resumes or skips what is done, so the script can be rerun after an interruption;
# a run that stopped on non-finite values is reported and left out, not retried. The stages
# can be run apart (for instance two at once on two cores):
#
#   bash scripts/results_int8.sh [float] [ptq] [control] [ste] [lut] [lut8] [report]
#
# (default: all of them, in this order)
#   RESULTS_OUT  run folders (default runs/results; fine-tunings in runs/results-int8)
#   MODELS       the models of the float, control, ste and lut stages (default: lenet5
#                lenet300100)
#
# Every run uses one CPU thread (torch's sums then do not depend on the machine's core count,
# so a run is repeatable anywhere); run stages side by side to use more cores, e.g.
#   MODELS=lenet5 bash scripts/results_int8.sh float & MODELS=lenet300100 bash ... float
#   DESIGNS      the designs of the ste and lut stages (default: every listed one)
#   SEEDS        the seeds of the ste and lut stages (default: 0 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${RESULTS_OUT:-runs/results}"
TUNED="$OUT-int8"
A=.venv/bin/approxsim
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
        --epochs 2 --lr 0.01 --seed "$seed" --out "$dir" --threads 1 --resume --no-progress "$@" \
        2> >(tee "$dir.err" >&2); then
        echo "results_int8: $dir stopped (left out)" >&2
        mkdir -p "$dir" && tail -n 3 "$dir.err" > "$dir/stopped.txt"
    fi
    rm -f "$dir.err"
}

for stage in "${stages[@]}"; do
    case "$stage" in
    float)
        # The float runs the results in docs/results-int8.md start from are kept in the repo
        # (docs/results/float-lenets): restored from there, so every fine-tuning, whenever and
        # wherever it runs, starts from the same weights; trained only where missing.
        for seed in 0 1 2; do
            for model in ${MODELS:-lenet5 lenet300100}; do
                kept="docs/results/float-lenets/$model-fp32-s$seed"
                if [ -d "$kept" ] && [ ! -e "$OUT/$model-fp32-s$seed" ]; then
                    mkdir -p "$OUT" && cp -r "$kept" "$OUT/"
                fi
                $A train --model "$model" --dataset fashion-mnist --multiplier fp32 --epochs 10 \
                    --seed "$seed" --out "$OUT/$model-fp32-s$seed" --threads 1 --resume --no-progress
            done
        done
        ;;
    ptq) .venv/bin/python scripts/results_int8.py ptq --runs "$OUT" --out docs/results ;;
    control)
        for seed in 0 1 2; do
            for model in ${MODELS:-lenet5 lenet300100}; do
                fine_tune "$model" "$seed" "$TUNED/$model-fp32-ft-s$seed" --multiplier fp32
            done
        done
        ;;
    ste | lut)
        # Seed 0 of every design first, then the others; LeNet-5 before LeNet-300-100.
        designs="${DESIGNS:-$($A multipliers list --kind int | awk '{print $1}')}"
        for seed in ${SEEDS:-0 1 2}; do
            for model in ${MODELS:-lenet5 lenet300100}; do
                for mult in $designs; do
                    fine_tune "$model" "$seed" "$TUNED/$model-$mult-$stage-s$seed" \
                        --int-multiplier "$mult" --grad "$stage"
                done
            done
        done
        ;;
    lut8)
        for seed in ${SEEDS:-0 1 2}; do
            for model in ${LUT8_MODELS:-lenet5 lenet300100}; do
                for mult in ${LUT8_DESIGNS:-drum6_u8 bam_h3v8_u8 drum4_u8 bam_h2v6_u8 bam_h4v9_u8}; do
                    fine_tune "$model" "$seed" "$TUNED/$model-$mult-lut8-s$seed" \
                        --int-multiplier "$mult" --grad lut --lut-step 8
                done
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
