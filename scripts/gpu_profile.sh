#!/usr/bin/env bash
# Profile the reference model and Llama-shaped models on CUDA; everything lands in one folder.
#   bash scripts/gpu_profile.sh [OUT_DIR]        (default: $OUT, else profiles/cuda)
# Budget: under 8 minutes on an H100/H200-class GPU. Needs torch with CUDA and eesim's deps
# (pip install --no-deps -e . plus the wheels named in docs/benchmarks.md when offline).
set -euo pipefail
out=${1:-${OUT:-profiles/cuda}}
mkdir -p "$out"
python -m eesim.cli profile --model ref --device cuda --out "$out/ref.parquet"
python -m eesim.cli profile --model llama-3.2-1b --device cuda --max-layers 4 --out "$out/llama-3.2-1b.parquet"
python -m eesim.cli profile --model llama-3-8b --device cuda --max-layers 2 --out "$out/llama-3-8b.parquet"
python -m eesim.cli profile show "$out/llama-3-8b.parquet" --json > "$out/llama-3-8b.summary.json"
(nvidia-smi -q || true) > "$out/nvidia-smi.txt"
python -m pip freeze > "$out/pip-freeze.txt"
python - <<'PY' > "$out/environment.json"
import json, torch
from eesim.profile.env import environment
print(json.dumps(environment(torch.device("cuda"), torch.bfloat16), indent=2))
PY
echo "wrote $(ls "$out" | wc -l) files to $out" >&2
