#!/usr/bin/env bash
# Train the runs behind docs/results.md — the sweep scripts/results.toml: LeNet-300-100 and
# LeNet-5 on Fashion-MNIST with fp32, bf16, bf16_trunc, mitchell7 and mbm7, seeds 0, 1 and 2 —
# then print the table of final test accuracy (mean ± std over the seeds) per model. Every run
# is resumable: rerunning the script continues interrupted runs and skips finished ones.
#
#   RESULTS_OUT     the sweep's folder (default runs/results)
#   RESULTS_EPOCHS  epochs per run (default 10; another value is another sweep: use another
#                   RESULTS_OUT)
#   RESULTS_MODELS  models (default "lenet300100 lenet5")
#   RESULTS_JOBS    runs at a time, the cores split between them (default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${RESULTS_OUT:-runs/results}"
EPOCHS="${RESULTS_EPOCHS:-10}"
MODELS="${RESULTS_MODELS:-lenet300100 lenet5}"
JOBS="${RESULTS_JOBS:-1}"
A=.venv/bin/approxsim
SPEC=scripts/results.toml
if [[ "$EPOCHS" != 10 || "$MODELS" != "lenet300100 lenet5" ]]; then
    # The spec with the requested epochs and models, beside the sweep it describes.
    mkdir -p "$OUT"
    SPEC="$OUT/results.toml"
    models=$(printf '"%s", ' $MODELS)
    sed -e "s/^epochs = .*/epochs = $EPOCHS/" -e "s/^model = .*/model = [${models%, }]/" \
        scripts/results.toml > "$SPEC.tmp"
    mv "$SPEC.tmp" "$SPEC"
fi
$A sweep run "$SPEC" --out "$OUT" --jobs "$JOBS" --no-progress
$A sweep report "$OUT" --metric final_test_acc
