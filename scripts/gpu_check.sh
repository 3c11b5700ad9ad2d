#!/usr/bin/env bash
# One prepared run for a machine with a GPU: set up, test the compiled Triton kernels against the
# CPU specification (and every kernel against the number format's special operands), then
# measure every GPU target of the speed issue: approximate vs native ops
# (TF32 off and on, plus large square GEMMs for the T MAC/s figure), whole models (training step
# vs native float32, TF32 off) and the LUT engine on the GPU against single- and multi-threaded
# direct simulation of a C model on the CPU. Results go to
# ${OUT:-gpu-results}/ (JSON + logs) so they can be copied into docs/bench/. PyTorch must be a
# CUDA build there: set APPROXSIM_TORCH (e.g. torch==2.14.1) when the default is a CPU build.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
APPROXSIM_SKIP_DATA=1 bash scripts/setup.sh > "$OUT/setup.log" 2>&1 || { tail -20 "$OUT/setup.log"; exit 1; }
.venv/bin/python -m pip install -q "triton>=3.0" >> "$OUT/setup.log" 2>&1
.venv/bin/python -m pytest -q tests/ops/test_cuda.py tests/ops/test_kernel_parity.py 2>&1 \
    | tee "$OUT/test_cuda.log" | tail -5
A=.venv/bin/approxsim
$A bench ops --device cuda --reps 5 --json "$OUT/gpu-ops.json" --overwrite 2>"$OUT/bench.err" | tee "$OUT/gpu-ops.txt"
$A bench ops --device cuda --reps 5 --tf32 --json "$OUT/gpu-ops-tf32.json" --overwrite 2>>"$OUT/bench.err" \
    | tee "$OUT/gpu-ops-tf32.txt"
$A bench ops --device cuda --reps 3 --problems gemm2048,gemm4096 --json "$OUT/gpu-ops-large.json" --overwrite \
    2>>"$OUT/bench.err" | tee "$OUT/gpu-ops-large.txt"
$A bench models --device cuda --models lenet5,resnet18,resnet50 --batch-size 32 --batches 10 \
    --json "$OUT/gpu-models.json" --overwrite 2>>"$OUT/bench.err" | tee "$OUT/gpu-models.txt"
$A bench direct --device cuda --c examples/mitchell.c --function mitchell_mul --mantissa-bits 7 \
    --json "$OUT/gpu-direct.json" --overwrite 2>>"$OUT/bench.err" | tee "$OUT/gpu-direct.txt"
echo "gpu_check: results in $OUT"
