#!/usr/bin/env bash
# The GPU acceptance check (issue 15): one command, at most 8 minutes on one H100/H200, offline.
#   benchmarks/gpu_check.sh                 # on the GPU machine (random-weight Llama-3.1-8B, Qwen3-4B, bf16)
#   benchmarks/gpu_check.sh --cpu           # the same code path, tiny architectures, CPU, < 1 minute
#   benchmarks/gpu_check.sh --out DIR ...   # more options: python -m benchmarks.gpu.check --help
# Results (JSON, summary.md, gpu_check.log): --out DIR, else $OUT, else results/bench/gpu/<gpu-name>/.
# Wheels in .whl/ (benchmarks/gpu_wheels.sh) are installed into /tmp/site first (GPU mode only).
# MTPSD_GPU_CHECK_CPU=1 means --cpu; PYTHON picks the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
args=("$@")
cpu=0
for a in ${args[@]+"${args[@]}"}; do [ "$a" = --cpu ] && cpu=1; done
if [ "${MTPSD_GPU_CHECK_CPU:-0}" = 1 ] && [ $cpu = 0 ]; then cpu=1; args+=(--cpu); fi
if [ $cpu = 0 ] && compgen -G ".whl/*.whl" > /dev/null; then
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl; then
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu_check: installing .whl/ failed; using the installed packages" >&2
    fi
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
out=$("$PY" -m benchmarks.gpu.check --print-out-dir ${args[@]+"${args[@]}"}) || exit 2
mkdir -p "$out"
"$PY" -m benchmarks.gpu.check ${args[@]+"${args[@]}"} --out "$out" 2>&1 | tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
