"""``python -m benchmarks``: the speed and memory benchmark (see :mod:`benchmarks.speed`)."""

import sys

from benchmarks.speed import main

if __name__ == "__main__":
    sys.exit(main())
