"""``python -m map_build``: package spine-map as a MONAI Application Package (MAP).

Commands (run from the repository root)::

    python -m map_build stage OUT                     # the MAP's application folder: app/, operators/,
                                                      #   requirements.txt, __main__.py
    python -m map_build context OUT [-m MODELS]       # + docker build context and Dockerfile, offline,
                                                      #   no docker daemon needed
    python -m map_build build [-m MODELS] [-o DIR]    # build the image with monai-deploy package
                                                      #   (needs docker with buildx); -o also saves a tarball

``MODELS`` defaults to the repository's ``models/``. ``build`` runs::

    monai-deploy package STAGED -c app.yaml -t spine-map:VERSION --platform x86_64 -m STAGED_MODELS \\
        --source map_build/artifacts.json --sdk monai-deploy

Exit codes: 0 done; 1 packaging failed (one line says why; for ``build``, holoscan-cli's own exit
code and output); 2 usage error; 3 docker cannot build here (the line says what is missing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from map_build.package import DEFAULT_MODELS, PackagingError, build_image, docker_problems, stage_application, write_build_context

PROG = "map_build"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_DOCKER = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description="Package spine-map as a MONAI Application Package.")
    commands = parser.add_subparsers(dest="command", required=True)
    stage = commands.add_parser("stage", help="write the MAP's application folder")
    stage.add_argument("out", type=Path, help="new or empty folder")
    context = commands.add_parser("context", help="write the docker build context and Dockerfile (offline, no docker)")
    context.add_argument("out", type=Path, help="new or empty folder")
    build = commands.add_parser("build", help="build the MAP image with monai-deploy package (needs docker buildx)")
    build.add_argument("-o", "--output", type=Path, help="also save the image as a tarball into this folder")
    for sub in (context, build):
        sub.add_argument("-m", "--models", type=Path, default=DEFAULT_MODELS, help="models folder (default: models/)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (see the module docstring)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_request:  # argparse: --help (0) or a usage error (2)
        return exit_request.code if isinstance(exit_request.code, int) else EXIT_USAGE
    try:
        if args.command == "stage":
            staged = stage_application(args.out)
            print(f"{PROG}: staged the MAP application folder in {staged}")
            return EXIT_OK
        if args.command == "context":
            context = write_build_context(args.out, args.models)
            print(
                f"{PROG}: build context for {context.image} (base {context.base_image}) in {context.folder}; "
                f"build it with: docker buildx build -f {context.dockerfile} {context.folder}"
            )
            return EXIT_OK
        problems = docker_problems()
        if problems:
            print(f"{PROG}: cannot build the image here: {'; '.join(problems)}. "
                  f"`python -m {PROG} context OUT` writes the build context without docker.", file=sys.stderr)
            return EXIT_NO_DOCKER
        return build_image(args.models, args.output)
    except PackagingError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
