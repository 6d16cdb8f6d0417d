#!/usr/bin/env bash
# From a fresh clone: set up .venv (idempotent) and run the test suite.
# Arguments go to pytest; by default tests marked slow are left out (`./run_tests.sh -m slow` runs them).
set -euo pipefail
cd "$(dirname "$0")"

scripts/setup_venv.sh

# Holoscan wants a 32 MiB stack, and the app tests run Holoscan inside the pytest process: raise
# the soft limit when it is lower (the hard limit allowing).
if [ "$(ulimit -S -s)" != unlimited ] && [ "$(ulimit -S -s)" -lt 32768 ]; then
    ulimit -S -s 32768 2>/dev/null || echo "run_tests: could not raise the stack limit to 32 MiB" >&2
fi
exec .venv/bin/python -m pytest -m "not slow" "$@"
