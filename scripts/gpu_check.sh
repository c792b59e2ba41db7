#!/usr/bin/env bash
# GPU check (issue 18): on a lent GPU machine, in under 8 minutes, measure model-only vs full
# training steps with lcip's default recipe at the paper's size, the host-to-device share,
# prediction throughput on a 7000 x 6000 px tile and the epitome's seconds per 1024 px window;
# writes the markdown table for BENCHMARKS.md (scripts/gpu_check.py has the details).
#
#   scripts/gpu_check.sh [OUT.md]          # default outputs/gpu_check/gpu_check.md
#   GPU_CHECK_SMOKE=1 scripts/gpu_check.sh # tiny sizes on the CPU: checks the script (tests)
#
# Needs lcip installed in .venv (make setup) or PYTHON pointing at a Python that has it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${1:-outputs/gpu_check/gpu_check.md}
if [[ -n "${GPU_CHECK_SMOKE:-}" ]]; then
    args=(--device cpu --tiny --budget 60)
else
    args=(--device cuda --budget 420)
fi
# 8 minutes at most, whatever a section does (the sections share 7 of them).
exec timeout --kill-after=10 480 "$PYTHON" scripts/gpu_check.py "${args[@]}" --out "$OUT"
