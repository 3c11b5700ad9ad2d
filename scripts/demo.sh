#!/usr/bin/env bash
# Set everything up, then run the main job and write its results under runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p runs/demo
A=.venv/bin/approxsim
$A multipliers list --stats
$A multipliers show mitchell7 --plot runs/demo/mitchell7.png
$A multipliers show mbm7 --plot runs/demo/mbm7.png --json > runs/demo/mbm7.json
echo "demo: wrote runs/demo/mitchell7.png, runs/demo/mbm7.png and runs/demo/mbm7.json"
