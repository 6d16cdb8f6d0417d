"""``python -m training <command>``: the training-side command line.

Commands register themselves through an ``add_parser(subparsers)`` function that sets ``run`` as the
parser default; add later ones (train, evaluate, export) to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Modules providing sub-commands, each with ``add_parser(subparsers)``.
COMMANDS: tuple[str, ...] = (
    "training.synthetic.cli", "training.synthetic.preview", "training.evaluate", "training.detection.cli",
    "training.grading.cli", "training.rsna.cli", "training.cancer.cli", "training.bilsky.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per registered command."""
    parser = argparse.ArgumentParser(prog="python -m training", description="spine-map training tools")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process arguments), run the command, return its exit status."""
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
