#!/usr/bin/env bash
# Create .venv and install spine-map into it: editable, with the training and test extras.
#
# Idempotent: when .venv already holds an install made from the current pyproject.toml (recorded in
# .venv/.spine-map-installed), it does nothing. Used by run_example.sh and run_tests.sh.
# PYTHON chooses the interpreter that creates the venv (default: python3; 3.10 to 3.13).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.spine-map-installed"
wanted="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    exit 0
fi

echo "spine-map: installing into $venv (the first time takes a few minutes)"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
# torch first and pinned: 2.13.0 is the CPU build; left to monai's requirements, pip would pick a
# multi-GB CUDA build instead.
"$venv/bin/python" -m pip install --quiet torch==2.13.0
"$venv/bin/python" -m pip install --quiet -e "$root[training,test]"
echo "$wanted" > "$stamp"
