#!/usr/bin/env bash
# The DQN runs behind docs/replay.md: CartPole-v1, CleanRL's DQN settings, 100k steps, seeds
# 0-4, one replay arm per folder (RESULTS_OUT/<arm>/seed<N>/), then the report (mean return vs
# steps with 95% bootstrap CIs, final-return IQM, AUC, steps to 475) in
# docs/results/replay-dqn.{json,md,png}.
#
# Arms (AM samplers: 6-bit linear levels, one candidate set per query):
#   uniform                  uniform replay
#   per-sumtree              exact PER (sum tree), PER's IS weights
#   per-cumsum               exact PER (cumsum + searchsorted), PER's IS weights
#   amper-knn-uniform        AMPER-k, k = 32, query level uniform over the level range
#   amper-knn-size_biased    AMPER-k, k = 32, query level drawn ∝ count · value
#   amper-fr-uniform         AMPER-fr, radius 1 level, uniform query
#   amper-fr-size_biased     AMPER-fr, radius 1 level, size-biased query
#   per-sumtree-isnone       IS-weight ablation: exact PER without IS weights
#   amper-fr-size_biased-issampler  IS-weight ablation: weights from the AM sampler's own
#                            per-draw probabilities instead of PER's formula
#
# Every run resumes or skips what is done (--resume), so the script can be rerun after an
# interruption. Usage:
#
#   bash scripts/results_replay.sh [ARM...] [report]     (default: every arm, then report)
#
#   RESULTS_OUT  run folders (default runs/replay-dqn)
#   STEPS        steps per run (default 100000)
#   SEEDS        seeds per arm (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${RESULTS_OUT:-runs/replay-dqn}"
STEPS="${STEPS:-100000}"
SEEDS="${SEEDS:-5}"
A=.venv/bin/approxsim
ALL_ARMS=(uniform per-sumtree amper-knn-uniform amper-knn-size_biased amper-fr-uniform
  amper-fr-size_biased per-sumtree-isnone per-cumsum amper-fr-size_biased-issampler)
stages=("$@")
if [ ${#stages[@]} -eq 0 ]; then stages=("${ALL_ARMS[@]}" report); fi

# arm_args ARM: the replay options of one arm.
arm_args() {
    local am="--bits 6 --levels linear --csp query"
    case "$1" in
        uniform) echo "--replay uniform" ;;
        per-sumtree) echo "--replay per-sumtree" ;;
        per-cumsum) echo "--replay per-cumsum" ;;
        amper-knn-uniform) echo "--replay amper-knn --k 32 --query uniform $am" ;;
        amper-knn-size_biased) echo "--replay amper-knn --k 32 --query size_biased $am" ;;
        amper-fr-uniform) echo "--replay amper-fr --radius 1 --query uniform $am" ;;
        amper-fr-size_biased) echo "--replay amper-fr --radius 1 --query size_biased $am" ;;
        per-sumtree-isnone) echo "--replay per-sumtree --is-weights none" ;;
        amper-fr-size_biased-issampler)
            echo "--replay amper-fr --radius 1 --query size_biased $am --is-weights sampler" ;;
        *) echo "results_replay: unknown arm $1" >&2; return 1 ;;
    esac
}

for stage in "${stages[@]}"; do
    if [ "$stage" = report ]; then
        dirs=()
        for arm in "${ALL_ARMS[@]}"; do
            [ -d "$OUT/$arm" ] && dirs+=("$OUT/$arm")
        done
        $A replay report "${dirs[@]}" --out docs/results/replay-dqn --overwrite
        continue
    fi
    args=$(arm_args "$stage")
    echo "results_replay: $stage" >&2
    # shellcheck disable=SC2086
    $A replay dqn --env CartPole-v1 $args --seeds "$SEEDS" --steps "$STEPS" \
        --out "$OUT/$stage" --resume --no-progress
done
