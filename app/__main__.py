"""``python app -i STUDY_DIR -o OUT_DIR [-m MODELS_DIR] [-l LEVEL]``: run spine-map on one study.

Works from the repository root without installing (``python app``), as ``python -m app``, and as
the MAP entry point (``python3 /opt/holoscan/app``, paths from ``HOLOSCAN_*_PATH``). Exit codes:
see :mod:`app.cli`.
"""

import sys
from pathlib import Path

if not __package__:
    # Run as a folder (`python app`): Python put this folder, not its parent, on sys.path. Swap it
    # for the parent so that `app` and `operators` import as packages and no module in here
    # shadows a top-level one.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from app.cli import run_app_main  # noqa: E402 - needs the sys.path fix above

if __name__ == "__main__":
    sys.exit(run_app_main())
