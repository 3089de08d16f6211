#!/usr/bin/env bash
# Runs on the lent GPU machine, from the repository root, over what bench/gpu_pack.py put in .gpu/.
# One device `run` call per step, back to back while the machine stays warm (30 s after a call):
#
#   bash bench/gpu_run.sh check      carry [".gpu/check"]    pydantic, MiniLM back to fp32 in /tmp/minilm,
#                                                             then bench/gpu_check.py (about 2 minutes)
#   bash bench/gpu_run.sh stage      carry [".gpu/sweep-0"]  keeps the carried wheels in /tmp/stage; again
#                                    carry [".gpu/sweep-1"]  for each load but the last
#   bash bench/gpu_run.sh sweep      carry [".gpu/sweep-2"]  stages the last load, installs all, runs the
#                                                             4-trial GPU sweep (bench/sweeps/gpu.yaml) and
#                                                             promotes its best
# (bench/gpu_pack.py prints the loads; each fits one call's 64 MiB. A cold machine starts bare:
# then begin again with check.)
#
# What comes back is under $OUT: nvidia-smi.txt, gpu_check.jsonl, sweep.log, promote.json.
set -euo pipefail
export PYTHONUNBUFFERED=1
SITE=/tmp/site STAGE=/tmp/stage OUT=${OUT:-/tmp/out}
mkdir -p "$SITE" "$STAGE" "$OUT"
stage_carried() {
    for load in .gpu/sweep-*; do [ -d "$load" ] && cp "$load"/* "$STAGE"/; done
    ls -la "$STAGE" | tail -n +2
}
install() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$@"; }

case "${1:?check | stage | sweep}" in
check)
    install .gpu/check/whl/*.whl
    export PYTHONPATH=$SITE
    python3 - <<'PY'
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

source, target = Path(".gpu/check/minilm"), Path("/tmp/minilm")  # carried as fp16 (64 MiB per call)
shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.safetensors"))
weights = load_file(str(source / "model.safetensors"))
save_file({k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, str(target / "model.safetensors"))
PY
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
    python3 bench/gpu_check.py --model /tmp/minilm --oom-check --out "$OUT/gpu_check.jsonl"
    ;;
stage)
    stage_carried
    ;;
sweep)
    stage_carried
    test -d /tmp/minilm && test -d "$SITE/pydantic" || { echo "run 'check' first (the machine went cold?)"; exit 2; }
    test -f "$STAGE/MANIFEST" || { echo "run 'stage' with .gpu/sweep-0 first (the machine went cold?)"; exit 2; }
    missing=$(cd "$STAGE" && while read -r f; do [ -e "$f" ] || [ -e "${f%.part[0-9][0-9]}" ] || echo "$f"; done < MANIFEST)
    [ -z "$missing" ] || { echo "not staged (the machine went cold? start again with check): $missing"; exit 2; }
    (cd "$STAGE" && for part in *.part00; do
        [ -e "$part" ] || continue
        wheel=${part%.part00}
        cat "$wheel".part* > "$wheel" && rm "$wheel".part*
    done)
    install "$STAGE"/*.whl
    export PYTHONPATH=$SITE:$PWD
    python3 -m orchestrator.cli run bench/sweeps/gpu.yaml --set model=/tmp/minilm --workdir /tmp/gpu-work 2>&1 | tee "$OUT/sweep.log"
    python3 -m orchestrator.cli promote --workdir /tmp/gpu-work --sweep gpu --json > "$OUT/promote.json"
    cat "$OUT/promote.json"
    ;;
*)
    echo "usage: bash bench/gpu_run.sh check | stage | sweep" >&2
    exit 2
    ;;
esac
