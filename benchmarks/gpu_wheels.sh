#!/usr/bin/env bash
# Wheels for the GPU acceptance check (benchmarks/gpu_check.sh), which installs whatever lies in
# .whl/ into /tmp/site on the GPU machine (no network there) and puts it first on PYTHONPATH.
#   benchmarks/gpu_wheels.sh          # run here, where pip reaches PyPI; writes .whl/ (git-ignored)
# Ships the project's pins of the packages whose version changes what the check runs:
# transformers==5.23.0 and tokenizers==0.23.3 (the GPU machine has 5.17.0 / 0.23.2), for
# CPython 3.12 on manylinux x86_64. Their other requirements are already there, new enough
# (GPU machine, 2026-11: huggingface_hub 1.33.0 >= 1.31, safetensors 0.8.0, numpy, packaging,
# pyyaml, regex >= 2025.10.22 (transformers 5.17 requires the same), typer, tqdm), so
# --no-deps; the Requires-Dist lines are printed below for a re-check. Also torchao==0.18.0 (the
# one-GPU training recipe's 8-bit AdamW, benchmarks/train_segment.py; no dependencies). About 21 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PINS=(transformers==5.23.0 tokenizers==0.23.3 torchao==0.18.0)
mkdir -p .whl
rm -f .whl/*.whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${PINS[@]}"
for w in .whl/*.whl; do
    echo "== $(basename "$w")"
    unzip -p "$w" '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' || true
done
du -sh .whl
