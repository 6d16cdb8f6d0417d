"""``python -m training rsna``: RSNA 2024 LSDC tools.

* ``rsna score --solution train.csv --submission submission.csv [--json OUT]`` — the competition
  metric (:mod:`training.rsna.metric`) of a submission against ``train.csv``-format labels (blank
  cells are not scored); prints one line per loss, writes them as JSON with ``--json``.
* ``rsna check --root DIR [--split-csv train.csv]`` — read a competition layout
  (:func:`training.rsna.layout.read_rsna_layout`) and print what it holds and every counted warning.
* ``rsna predict --root DIR [--split-csv F] [--models models] --out submission.csv`` — grade every
  study of a layout with the exported multi-view grader (:mod:`training.rsna.predict`) and write the
  competition's ``submission.csv``; ``--split-csv`` absent or missing reads the test layout.

Exit status: 0 on success, 1 when a file cannot be read or scored (the message names the file and
line or the missing rows), 2 on bad arguments (argparse).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from operators.core.onnx_models import ModelError
from operators.core.study_warning import StudyWarning
from training.rsna.layout import RsnaFormatError, read_labels, read_rsna_layout
from training.rsna.metric import score_submission, solution_rows
from training.rsna.submission import read_submission, write_submission


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``rsna`` command and its ``score`` / ``check`` actions."""
    parser = subparsers.add_parser("rsna", help="RSNA 2024 LSDC tools: score a submission, check a layout",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="rsna_action", metavar="ACTION", required=True)
    score = actions.add_parser("score", help="competition metric of a submission.csv against train.csv labels")
    score.add_argument("--solution", type=Path, required=True, help="labels in train.csv format")
    score.add_argument("--submission", type=Path, required=True,
                       help="submission.csv (row_id,normal_mild,moderate,severe)")
    score.add_argument("--json", type=Path, help="also write the losses as JSON here")
    score.set_defaults(run=run_score)
    check = actions.add_parser("check", help="read a competition layout and report what it holds")
    check.add_argument("--root", type=Path, required=True, help="the competition folder")
    check.add_argument("--split-csv", default="train.csv",
                       help="label file choosing the studies (default train.csv; absent: the test layout)")
    check.set_defaults(run=run_check)
    predict = actions.add_parser("predict", help="grade every study of a layout and write submission.csv")
    predict.add_argument("--root", type=Path, required=True, help="the competition folder")
    predict.add_argument("--split-csv", default="train.csv",
                         help="label file choosing the studies (default train.csv; absent: the test layout)")
    predict.add_argument("--models", type=Path, default=Path("models"), help="models folder (default: models)")
    predict.add_argument("--out", type=Path, required=True, help="submission.csv to write")
    predict.set_defaults(run=run_predict)


def _print_warnings(problems: list[StudyWarning]) -> None:
    for warning in problems:
        print(f"warning {warning.code}: {warning.message}", file=sys.stderr)


def run_score(args: argparse.Namespace) -> int:
    """Score ``args.submission`` against ``args.solution``; print (and optionally save) the losses."""
    problems: list[StudyWarning] = []
    try:
        solution = solution_rows(read_labels(args.solution, problems))
        submission = read_submission(args.submission)
        result = score_submission(solution, submission)
    except ValueError as exc:  # RsnaFormatError (a ValueError) names file and line; scoring errors the rows
        _print_warnings(problems)
        print(f"rsna score: {exc}", file=sys.stderr)
        return 1
    _print_warnings(problems)
    studies = len({key[0] for key in solution})
    print(f"{len(solution)} labelled rows of {studies} studies scored")
    for name, value in result.items():
        print(f"{name:28s} {value:.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": len(solution), "studies": studies, **result}, indent=2) + "\n")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Read the layout under ``args.root``; print studies, series per description, labels and marks."""
    problems: list[StudyWarning] = []
    try:
        studies = read_rsna_layout(args.root, args.split_csv, problems=problems)
    except RsnaFormatError as exc:
        print(f"rsna check: {exc}", file=sys.stderr)
        return 1
    _print_warnings(problems)
    descriptions = Counter(s.description for study in studies for s in study.series.values())
    labelled = sum(1 for study in studies for severity in study.labels.values() if severity is not None)
    print(f"{len(studies)} studies; series: "
          + (", ".join(f"{name} {count}" for name, count in sorted(descriptions.items())) or "none"))
    print(f"{labelled} labelled cells, {sum(len(study.coordinates) for study in studies)} coordinates, "
          f"{len(problems)} warnings")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Grade the layout under ``args.root`` and write ``args.out``."""
    from training.rsna.predict import predict_studies  # loads ONNX Runtime only for this action

    problems: list[StudyWarning] = []
    try:
        studies = read_rsna_layout(args.root, args.split_csv, problems=problems)
        predictions, filled = predict_studies(studies, args.models, problems)
        rows = write_submission(predictions, args.out)
    except (RsnaFormatError, ModelError, OSError) as exc:
        print(f"rsna predict: {exc}", file=sys.stderr)
        return 1
    _print_warnings(problems)
    print(f"{rows} rows of {len(studies)} studies written to {args.out} ({filled} rows without a view: condition mean)")
    return 0
