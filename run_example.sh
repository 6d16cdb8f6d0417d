#!/usr/bin/env bash
# From a fresh clone: set up .venv, write a synthetic lumbar study and run spine-map on it.
# Idempotent: the venv and the example study are made once; the app runs every time.
set -euo pipefail
cd "$(dirname "$0")"

scripts/setup_venv.sh

study=example_study/study_000000
if [ ! -d "$study/study" ]; then
    # Generate beside the final place, then move: an interrupted run leaves no half study behind.
    rm -rf example_study/.partial
    .venv/bin/python -m training generate --seed 0 --count 1 --fov lumbar --out example_study/.partial
    mv example_study/.partial/study_000000 "$study"
    rm -rf example_study/.partial
fi
echo "spine-map: example study in $study/study (truth: $study/truth.json)"
exec .venv/bin/python app -i "$study/study" -o output/example
