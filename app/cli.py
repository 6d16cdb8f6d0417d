"""Command-line entry points: ``spine-map``, ``python app`` and the ``monai-deploy`` wrapper.

Commands::

    python app     -i STUDY_DIR -o OUT_DIR [-m MODELS_DIR] [-l LEVEL]   # from the repository root
    spine-map      -i STUDY_DIR -o OUT_DIR [-m MODELS_DIR] [-l LEVEL]   # installed script, same thing
    spine-map --batch -i STUDIES_DIR -o OUT_DIR [...]                  # every sub-folder a study
    monai-deploy exec [app] -i STUDY_DIR -o OUT_DIR [...]              # same, in-process
    monai-deploy package|run|version|nics ...                          # handed to holoscan-cli unchanged

SDK 4 dropped ``monai-deploy exec``; this wrapper brings it back and passes every other verb to
holoscan-cli's own ``monai-deploy``. (The project's script shadows holoscan-cli's script of the
same name because pip installs the project after its dependencies; reinstalling holoscan-cli on
its own would put its script back, and ``pip install -e .`` restores ours.)

``--batch`` runs every sub-folder of ``-i`` as one study in this one process (models are loaded
once), writes each study's outputs into ``OUT_DIR/<sub-folder name>/`` and a per-study table of
exit codes and run times into ``OUT_DIR/batch_summary.csv``; its exit code is 0 when every study
gave 0, else the code of the first study that did not.

Inside a MAP container the app runs without arguments and takes its folders from
``HOLOSCAN_INPUT_PATH`` / ``HOLOSCAN_OUTPUT_PATH`` / ``HOLOSCAN_MODEL_PATH``.

Exit codes:

====  =====================================================================================
0     report written (it may carry warnings)
1     internal error (a bug): one line on stderr; the exception class and code location (no
      data values) go to ``OUT_DIR/spine_map.log``; also a model that is missing or does not
      match ``models/manifest.json`` (the line names the model and the reason)
2     usage error: bad arguments, input folder missing
3     nothing usable: no readable DICOM image series in the input; a report with warnings is
      still written
4     the output could not be written (read-only folder, full disk): one line on stderr
====  =====================================================================================

The console gets one-line messages only, never a traceback; no message names a patient (the core
never puts patient names, IDs, accession numbers or birth dates into warnings or logs).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import json
import logging
import os
import resource
import sys
import time
import traceback
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from app import __version__

EXIT_OK = 0
EXIT_INTERNAL_ERROR = 1
EXIT_USAGE = 2
EXIT_NOTHING_USABLE = 3
EXIT_OUTPUT_UNWRITABLE = 4

PROG = "spine-map"
LOG_FILE_NAME = "spine_map.log"
#: Warnings printed on the console before "... and N more"; all of them are in the report.
MAX_CONSOLE_WARNINGS = 10

#: Holoscan asks for a 32 MiB stack (it warns and may crash below that).
STACK_BYTES = 32 * 1024 * 1024
_STACK_RAISED_ENV = "SPINE_MAP_STACK_RAISED"

#: The MONAI Deploy / Holoscan environment variables a MAP container sets (the SDK's RuntimeEnv).
_ENV_INPUT, _ENV_OUTPUT, _ENV_MODEL = "HOLOSCAN_INPUT_PATH", "HOLOSCAN_OUTPUT_PATH", "HOLOSCAN_MODEL_PATH"
#: The models shipped with the repository (design §4), used when neither -m nor the env var says.
DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"

_LOG_LEVELS = ("DEBUG", "INFO", "WARN", "ERROR", "CRITICAL")

logger = logging.getLogger("spine_map")
#: Progress of a run: per-stage timings (:mod:`operators.core.run_log`) and the closing lines.
run_logger = logging.getLogger("spine_map.run")


class UsageError(Exception):
    """Bad command line; the message is one line for the user."""


# --------------------------------------------------------------------------------------------------
# Process set-up
# --------------------------------------------------------------------------------------------------
def ensure_stack_limit() -> None:
    """Re-execute this process with a 32 MiB stack limit if it runs with less.

    Holoscan's worker threads take their stack size from RLIMIT_STACK as it was when the process
    started, so raising the limit in-process is not enough: the process restarts itself (once,
    guarded by an environment variable) with the same interpreter and arguments. When the hard
    limit forbids it, the run continues and Holoscan's own warning stays visible.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft == resource.RLIM_INFINITY or soft >= STACK_BYTES or os.environ.get(_STACK_RAISED_ENV):
        return
    if hard != resource.RLIM_INFINITY and hard < STACK_BYTES:
        return
    try:
        resource.setrlimit(resource.RLIMIT_STACK, (STACK_BYTES, hard))
        os.environ[_STACK_RAISED_ENV] = "1"
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    except OSError:
        return  # could not restart: carry on with the smaller stack


def keep_training_stack_out() -> None:
    """Run this process as the MAP container does: without torch and without MONAI core.

    The SDK lives in the ``monai.deploy`` namespace. Where MONAI core is installed beside it (a
    development or retraining environment), ``import monai.deploy`` first runs MONAI core's
    ``__init__``, which imports torch and every MONAI submodule, and the SDK then imports torch for
    its TorchScript model class: about 3 s of start-up for code spine-map never calls (inference runs
    on onnxruntime). Registering ``monai`` as a bare package and ``torch`` as absent makes the app
    start, time and fail the same way as in the container, where neither is installed. Called only
    at a process entry point, never on import, so tests and training in one process keep both.
    """
    if "monai" in sys.modules or "torch" in sys.modules:
        return  # already imported by the caller: nothing to keep out any more
    spec = importlib.util.find_spec("monai")
    if spec is not None and spec.submodule_search_locations is not None:
        package = types.ModuleType("monai")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["monai"] = package
    sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError


#: Top-level logger names of spine-map's own code; their messages are written with privacy in mind.
_OWN_LOGGERS = frozenset({"spine_map", "app", "operators", "training"})


def _is_own(record: logging.LogRecord) -> bool:
    return record.name.partition(".")[0] in _OWN_LOGGERS


def _redact_foreign(record: logging.LogRecord) -> bool:
    """Keep only the origin of other libraries' log records: their text may quote DICOM values or
    paths (patient names in folder names), which must not reach any log."""
    if not _is_own(record):
        record.msg = "%s message from %s (%s:%d); text not logged, it may quote data"
        record.args = (record.levelname, record.name, record.module, record.lineno)
        # Their tracebacks too (pydicom logs a decoder failure with one): the message of the
        # exception may quote data, and the failure is already reported as a study warning.
        record.exc_info, record.exc_text, record.stack_info = None, None, None
    return True


def _log_python_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """``warnings.showwarning`` replacement: a library warning becomes one log line with its class and
    location only (its text may quote data, see :func:`_redact_foreign`)."""
    logger.debug("library warning %s at %s:%d", category.__name__, Path(filename).name, lineno)


@contextlib.contextmanager
def _run_logging(output_dir: Path, level: str | None) -> Iterator[None]:
    """Log to ``OUT_DIR/spine_map.log`` (DEBUG) and, when ``-l`` asks for it, to the console.

    Without ``-l`` the console gets spine-map's own WARNING-and-above records only (the run's
    results are printed separately). Other libraries' records and Python warnings are logged by
    origin only, never their text. Holoscan's C++ logger is silenced unless ``-l`` or
    ``HOLOSCAN_LOG_LEVEL`` asks for it (its errors come back to us as Python exceptions anyway).
    Handlers are removed on exit, so in-process runs (tests) do not pile them up.
    """
    root = logging.getLogger()
    saved_level, saved_raise = root.level, logging.raiseExceptions
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(name)s: %(message)s"))
    if level:
        console.setLevel(level.replace("WARN", "WARNING"))
    else:
        console.setLevel(logging.WARNING)
        console.addFilter(_is_own)
    file_handler = logging.FileHandler(output_dir / LOG_FILE_NAME, mode="w", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for handler in (file_handler, console):
        handler.addFilter(_redact_foreign)
    root.addHandler(file_handler)
    root.addHandler(console)
    root.setLevel(logging.DEBUG)
    logging.raiseExceptions = False  # a full disk must not print logging's own tracebacks
    try:
        with warnings.catch_warnings():  # restores the filters and showwarning afterwards
            warnings.simplefilter("default")
            warnings.showwarning = _log_python_warning
            yield
    finally:
        logging.raiseExceptions = saved_raise
        for handler in (console, file_handler):
            root.removeHandler(handler)
            # Closing flushes the log file; on a full disk that fails, and the run's own outcome
            # (already decided and reported) must not be replaced by a second error.
            with contextlib.suppress(OSError):
                handler.close()
        root.setLevel(saved_level)


def _set_holoscan_log_level(level: str | None) -> None:
    if os.environ.get("HOLOSCAN_LOG_LEVEL"):
        return  # the user's explicit choice wins
    from holoscan.logger import LogLevel, set_log_level

    set_log_level(getattr(LogLevel, level) if level else LogLevel.OFF)


def _log_exception(error: BaseException) -> None:
    """Log an unexpected exception as its class and code locations only.

    Exception messages can quote data (a malformed tag value, a file name), so they stay out of
    the log; the frames are enough to find the bug.
    """
    frames = traceback.extract_tb(error.__traceback__)
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames[-8:]))
    logger.debug("unexpected %s at %s", type(error).__qualname__, where or "?")


# --------------------------------------------------------------------------------------------------
# Running the app on one study
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunOptions:
    """What one run needs: the study folder, the output folder, the models folder, a log level;
    with ``batch``, ``input_dir`` holds one study folder per sub-folder."""

    input_dir: Path
    output_dir: Path
    model_dir: Path
    log_level: str | None = None
    batch: bool = False


def _prepare_output(output_dir: Path) -> None:
    """Create the output folder, check it is writable and remove the previous run's output files.

    A report, SR or key image left from an earlier run must not pass for this run's result if this
    run fails.

    Raises:
        OSError: the folder cannot be created or written.
    """
    from operators.core.study_outputs import previous_outputs

    output_dir.mkdir(parents=True, exist_ok=True)
    probe = output_dir / f".{PROG}-write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()
    for path in previous_outputs(output_dir):
        path.unlink(missing_ok=True)


def _reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


def run_study(options: RunOptions) -> int:
    """Run :class:`~app.application.SpineMapApp` on one study folder in this process.

    Returns:
        The exit code (see the module docstring); messages have been printed.
    """
    try:
        _prepare_output(options.output_dir)
    except OSError as error:
        print(f"{PROG}: cannot write to output folder {options.output_dir}: {_reason(error)}", file=sys.stderr)
        return EXIT_OUTPUT_UNWRITABLE

    try:
        with _run_logging(options.output_dir, options.log_level):
            return _run_pipeline(options)
    except OSError as error:  # the log file itself could not be opened or written
        print(f"{PROG}: cannot write to output folder {options.output_dir}: {_reason(error)}", file=sys.stderr)
        return EXIT_OUTPUT_UNWRITABLE


def _run_pipeline(options: RunOptions) -> int:
    """Build and run the app; map every failure to an exit code and one console line."""
    # Imported before the try: the except clauses below name them even when the app import fails.
    from operators.core.onnx_models import ModelError
    from operators.core.report import ReportWriteError

    logger.info("%s %s: writing into %s", PROG, __version__, options.output_dir)
    try:
        from monai.deploy.core import AppContext

        from app.application import SpineMapApp

        _set_holoscan_log_level(options.log_level)
        context = AppContext(
            {"input": str(options.input_dir), "output": str(options.output_dir), "model": str(options.model_dir)}
        )
        start = time.perf_counter()
        SpineMapApp(context).run()
        code = _report_outcome(options.output_dir)
        _log_run_end(options.output_dir, time.perf_counter() - start)
        return code
    except ReportWriteError as error:
        _log_exception(error)
        print(f"{PROG}: {error}", file=sys.stderr)
        return EXIT_OUTPUT_UNWRITABLE
    except ModelError as error:  # missing or tampered model: the message names it (no patient data)
        _log_exception(error)
        print(f"{PROG}: {error}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    except Exception as error:  # never a traceback on the console
        _log_exception(error)
        print(
            f"{PROG}: internal error ({type(error).__name__}); details in {options.output_dir / LOG_FILE_NAME}",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


def _report_outcome(output_dir: Path) -> int:
    """Print what the run wrote and turn it into the exit code (read back from the report itself)."""
    from operators.core.report import REPORT_JSON_NAME

    report_path = output_dir / REPORT_JSON_NAME
    if not report_path.is_file():
        raise RuntimeError("the pipeline finished without writing a report")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    problems = report["warnings"]
    for warning in problems[:MAX_CONSOLE_WARNINGS]:
        print(f"{PROG}: warning {warning['code']}: {warning['message']}", file=sys.stderr)
    if len(problems) > MAX_CONSOLE_WARNINGS:
        print(f"{PROG}: ... and {len(problems) - MAX_CONSOLE_WARNINGS} more warnings in the report", file=sys.stderr)
    if not report["series"]:
        print(f"{PROG}: no readable DICOM image series in the input; report with warnings: {report_path}", file=sys.stderr)
        return EXIT_NOTHING_USABLE
    used = report["summary"]["series_used"]
    print(
        f"{PROG}: report written to {report_path} ({len(report['series'])} series, {used} used, "
        f"{len(problems)} warning{'s' if len(problems) != 1 else ''})"
    )
    return EXIT_OK


def _log_run_end(output_dir: Path, seconds: float) -> None:
    """The run log's closing lines: the run time and every file in the output folder."""
    from operators.core.study_outputs import previous_outputs

    names = [str(path.relative_to(output_dir)) for path in previous_outputs(output_dir)] + [LOG_FILE_NAME]
    run_logger.info("run finished in %.3f s", seconds)
    run_logger.info("outputs in %s: %s", output_dir, ", ".join(names))


# --------------------------------------------------------------------------------------------------
# Batch: many studies, one process
# --------------------------------------------------------------------------------------------------
BATCH_SUMMARY_NAME = "batch_summary.csv"
_OUTCOMES = {
    EXIT_OK: "report written",
    EXIT_INTERNAL_ERROR: "internal error",
    EXIT_USAGE: "usage error",
    EXIT_NOTHING_USABLE: "no readable DICOM image series",
    EXIT_OUTPUT_UNWRITABLE: "output not writable",
}


def run_batch(options: RunOptions) -> int:
    """Run every sub-folder of ``options.input_dir`` as one study (see the module docstring).

    Studies run one after the other in this process, so each model is loaded once
    (:func:`operators.core.onnx_models.open_model` caches them) and reused by every study.

    Returns:
        0 when every study gave 0, else the exit code of the first study that did not;
        :data:`EXIT_USAGE` when ``-i`` has no sub-folder, :data:`EXIT_OUTPUT_UNWRITABLE` when the
        summary cannot be written.
    """
    studies = sorted(p for p in options.input_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not studies:
        print(f"{PROG}: error: --batch needs study folders inside {options.input_dir}; it has none", file=sys.stderr)
        return EXIT_USAGE
    rows = []
    for number, study in enumerate(studies, start=1):
        print(f"{PROG}: study {number} of {len(studies)}: {study.name}")
        start = time.perf_counter()
        code = run_study(
            RunOptions(study, options.output_dir / study.name, options.model_dir, options.log_level)
        )
        rows.append((study.name, code, time.perf_counter() - start))
    failed = [(name, code) for name, code, _ in rows if code != EXIT_OK]
    summary_path = options.output_dir / BATCH_SUMMARY_NAME
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(("study", "exit_code", "outcome", "seconds"))
    writer.writerows((name, code, _OUTCOMES[code], f"{seconds:.3f}") for name, code, seconds in rows)
    try:
        options.output_dir.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(table.getvalue(), encoding="utf-8")
    except OSError as error:
        print(f"{PROG}: cannot write {summary_path}: {_reason(error)}", file=sys.stderr)
        return EXIT_OUTPUT_UNWRITABLE
    print(
        f"{PROG}: batch finished: {len(rows)} studies, {len(rows) - len(failed)} with a report"
        + (f", {len(failed)} failed ({', '.join(f'{name}: exit {code}' for name, code in failed)})" if failed else "")
        + f"; summary in {summary_path}"
    )
    return failed[0][1] if failed else EXIT_OK


# --------------------------------------------------------------------------------------------------
# Argument parsing
# --------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of exiting, so callers choose the exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _run_parser(prog: str) -> _Parser:
    parser = _Parser(
        prog=prog,
        description="Analyse one spine MRI/CT study folder and write spine_report.json and spine_report.csv.",
        epilog="Exit codes: 0 report written, 1 internal error, 2 usage error, 3 no readable DICOM image "
        "series (report with warnings written), 4 output not writable.",
    )
    parser.add_argument("-i", "--input", help=f"study folder with DICOM files (default: ${_ENV_INPUT})")
    parser.add_argument("-o", "--output", help=f"output folder, created if needed (default: ${_ENV_OUTPUT} or ./output)")
    parser.add_argument("-m", "--model", help=f"models folder (default: ${_ENV_MODEL} or the repository's models/)")
    parser.add_argument(
        "-l", "--log-level", type=str.upper, choices=_LOG_LEVELS, help="console log level (default: warnings only)"
    )
    parser.add_argument(
        "--batch", action="store_true",
        help="-i is a folder of study folders: run each in this process (models loaded once), "
        "outputs in OUT_DIR/<study folder name>/, exit codes in OUT_DIR/batch_summary.csv",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


def parse_run_args(argv: Sequence[str], prog: str = PROG) -> RunOptions:
    """Turn ``-i/-o/-m/-l`` (or the ``HOLOSCAN_*_PATH`` variables) into :class:`RunOptions`.

    Raises:
        UsageError: unknown options, no input given, input or models folder missing.
    """
    args = _run_parser(prog).parse_args(list(argv))
    input_arg = args.input or os.environ.get(_ENV_INPUT)
    if not input_arg:
        raise UsageError(f"no study folder given: use -i STUDY_DIR (or set {_ENV_INPUT})")
    input_dir = Path(input_arg).absolute()
    if not input_dir.exists():
        raise UsageError(f"input folder does not exist: {input_dir}")
    if not input_dir.is_dir():
        raise UsageError(f"input must be a folder of DICOM files, not a file: {input_dir}")
    model_arg = args.model or os.environ.get(_ENV_MODEL)
    model_dir = Path(model_arg).absolute() if model_arg else DEFAULT_MODELS_DIR
    # Only an explicit -m must exist: a MAP always sets HOLOSCAN_MODEL_PATH, models packaged or not.
    if args.model and not model_dir.exists():
        raise UsageError(f"models folder does not exist: {model_dir}")
    output_dir = Path(args.output or os.environ.get(_ENV_OUTPUT) or "output").absolute()
    return RunOptions(
        input_dir=input_dir, output_dir=output_dir, model_dir=model_dir, log_level=args.log_level, batch=args.batch
    )


def _run_command(argv: Sequence[str], prog: str) -> int:
    try:
        options = parse_run_args(argv, prog)
    except UsageError as error:
        print(f"{prog}: error: {error} (usage: {prog} -i STUDY_DIR -o OUT_DIR; see --help)", file=sys.stderr)
        return EXIT_USAGE
    return run_batch(options) if options.batch else run_study(options)


def run_app_main(argv: Sequence[str] | None = None) -> int:
    """``spine-map`` / ``python app``: run on one study folder. Returns the exit code."""
    if argv is None:
        ensure_stack_limit()
        keep_training_stack_out()
        argv = sys.argv[1:]
    return _run_command(argv, PROG)


# --------------------------------------------------------------------------------------------------
# The monai-deploy wrapper
# --------------------------------------------------------------------------------------------------
_APP_DIR = Path(__file__).resolve().parent
_EXEC_HELP = (
    "spine-map adds one verb to holoscan-cli's monai-deploy:\n"
    "  exec [app] -i STUDY_DIR -o OUT_DIR [-m MODELS_DIR] [-l LEVEL]\n"
    "                        run the spine-map app in-process on a study folder\n"
)


def _is_this_app(argument: str) -> bool:
    """``exec``'s optional app argument: ``app`` or a path to this app's folder."""
    return argument == "app" or Path(argument).resolve() == _APP_DIR


def _holoscan_cli(args: Sequence[str]) -> int:
    """Hand ``args`` to holoscan-cli's ``monai-deploy`` implementation and return its exit code."""
    from holoscan_cli.__main__ import main as holoscan_main

    # holoscan-cli looks at sys.argv[0] (to tell the MONAI Deploy flavour from plain Holoscan and to
    # say where it runs from), so it must read like its own `monai-deploy` script even in-process.
    program = sys.argv[0] if Path(sys.argv[0]).name == "monai-deploy" else str(Path(sys.executable).with_name("monai-deploy"))
    saved_argv = sys.argv
    sys.argv = [program, *args]
    try:
        holoscan_main(sys.argv)
    except SystemExit as exit_request:
        code = exit_request.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved_argv
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``monai-deploy``: ``exec`` runs spine-map in-process; every other verb goes to holoscan-cli."""
    process_entry = argv is None
    if process_entry:
        ensure_stack_limit()
        argv = sys.argv[1:]
    args = list(argv)
    if args and args[0] == "exec":
        if process_entry:
            keep_training_stack_out()
        rest = args[1:]
        if rest and not rest[0].startswith("-"):
            if not _is_this_app(rest[0]):
                print(
                    f"monai-deploy exec: error: this monai-deploy runs the spine-map app only, not {rest[0]!r}",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            rest = rest[1:]
        return _run_command(rest, "monai-deploy exec")
    if not args or args[0] in ("-h", "--help"):
        print(_EXEC_HELP)
    return _holoscan_cli(args)
