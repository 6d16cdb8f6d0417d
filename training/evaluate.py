"""``python -m training evaluate <target>``: measure a stage on fresh generated studies.

Every evaluation generates its own studies from seeds the training code never uses (the default
first seed is 900000), runs the same core code the app runs, prints a table and can write JSON.
Targets:

* ``roles`` — series selector: every generated series' role from
  :func:`operators.core.series_roles.assign_roles` (after loading the study folder with
  :func:`operators.core.dicom_io.scan_study_folder`) against the generator's ``expected_role``.
  Studies cycle through :data:`ROLE_EVALUATION_CONFIGS` so that every variation is covered:
  random protocols, duplicate series with half the descriptions corrupted, MR + CT studies, whole-spine
  stations, per-disc angled axial stacks, and studies holding every series kind the generator makes
  (fat-sat and post-contrast T1, GRE and T1 axials, coronal, DWI/ADC, localisers, CT reformats and scouts).
* ``detection``, ``grading`` — see :mod:`training.evaluate_detection`, :mod:`training.evaluate_grading`.
* ``reports`` — the free-text report labeller (:mod:`training.reports.evaluate`): precision and recall
  of the labels read from generated reports, first seed 940000.
* ``cancer`` — the cancer SCT (:mod:`training.evaluate_cancer`): AUROC per finding and sequence set,
  first seed 950000.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from operators.core.dicom_io import scan_study_folder
from operators.core.series_roles import assign_roles
from training.synthetic.study import CT_KINDS, DUPLICATES, MR_KINDS, StudyConfig, generate_study

#: Default first seed of evaluation studies (kept far from training seeds).
EVALUATION_FIRST_SEED = 900_000

#: Study configurations the role evaluation cycles through (``None`` fields stay random).
ROLE_EVALUATION_CONFIGS: tuple[tuple[str, StudyConfig], ...] = (
    ("random", StudyConfig()),
    ("duplicates+bad descriptions", StudyConfig(duplicates=DUPLICATES, description_corruption_rate=0.5)),
    ("MR+CT", StudyConfig(modalities="mr+ct")),
    ("whole spine stations", StudyConfig(field_of_view="whole")),
    ("angled axials", StudyConfig(field_of_view="lumbar", axial_mode="angled")),
    ("every series kind", StudyConfig(series_kinds=MR_KINDS + CT_KINDS)),
)


@dataclass(frozen=True)
class SeriesOutcome:
    """One series: what the generator made, the role it expects and the role the selector gave."""

    seed: int
    config: str
    kind: str
    expected: str
    predicted: str
    reason: str


def metric_cell(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
    """A Markdown metric cell: ``n/a`` where the metric is undefined (no label of a class in the test set)."""
    return "n/a" if value is None or not math.isfinite(value) else f"{scale * value:.{digits}f}"


def write_summary_json(summary: Mapping[str, Any], path: Path) -> None:
    """Write an evaluation summary as JSON (NaN refused: undefined metrics are null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, allow_nan=False, default=str) + "\n")


def map_jobs(function: Callable[[Any], Any], work: Sequence[Any], jobs: int) -> list[Any]:
    """``[function(job) for job in work]``, in ``jobs`` processes when ``jobs`` > 1 (order kept)."""
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(function, work))
    return [function(job) for job in work]


def _evaluate_roles_of_study(job: tuple[int, str, StudyConfig, Path]) -> list[SeriesOutcome]:
    seed, config_name, config, workdir = job
    study_dir = workdir / f"study_{seed:06d}"
    try:
        truth = generate_study(seed, study_dir, config)
        scan = scan_study_folder(study_dir / "study")
        decisions = {d.series_instance_uid: d for d in assign_roles(scan.series)}
        outcomes = []
        for series in truth["series"]:
            decision = decisions.get(series["series_instance_uid"])
            outcomes.append(
                SeriesOutcome(
                    seed,
                    config_name,
                    series["kind"],
                    series["expected_role"],
                    decision.role if decision else "(not loaded)",
                    decision.reason if decision else "",
                )
            )
        return outcomes
    finally:
        shutil.rmtree(study_dir, ignore_errors=True)


def evaluate_roles(count: int, first_seed: int = EVALUATION_FIRST_SEED, jobs: int = 1) -> dict[str, Any]:
    """Series-role accuracy over ``count`` generated studies.

    Returns:
        ``{"studies", "series", "correct", "accuracy", "by_kind": {kind: [correct, total]},
        "by_config": {...}, "confusion": {"expected -> predicted": n}, "mismatches": [...], "seconds"}``.
    """
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="spine-map-eval-") as workdir:
        work = [
            (seed, *ROLE_EVALUATION_CONFIGS[index % len(ROLE_EVALUATION_CONFIGS)], Path(workdir))
            for index, seed in enumerate(range(first_seed, first_seed + count))
        ]
        per_study = map_jobs(_evaluate_roles_of_study, work, jobs)
    outcomes = [outcome for study in per_study for outcome in study]
    return _summarise(outcomes, studies=count, seconds=time.perf_counter() - start)


def _tally(outcomes: Iterable[SeriesOutcome], key: str) -> dict[str, list[int]]:
    table: dict[str, list[int]] = {}
    for outcome in outcomes:
        entry = table.setdefault(getattr(outcome, key), [0, 0])
        entry[0] += outcome.expected == outcome.predicted
        entry[1] += 1
    return dict(sorted(table.items()))


def _summarise(outcomes: list[SeriesOutcome], studies: int, seconds: float) -> dict[str, Any]:
    correct = sum(o.expected == o.predicted for o in outcomes)
    confusion = Counter(f"{o.expected} -> {o.predicted}" for o in outcomes)
    return {
        "studies": studies,
        "series": len(outcomes),
        "correct": correct,
        "accuracy": correct / len(outcomes) if outcomes else 0.0,
        "by_kind": _tally(outcomes, "kind"),
        "by_config": _tally(outcomes, "config"),
        "confusion": dict(sorted(confusion.items())),
        "mismatches": [vars(o) for o in outcomes if o.expected != o.predicted],
        "seconds": round(seconds, 1),
    }


def _print_roles(summary: dict[str, Any]) -> None:
    print(f"series roles: {summary['correct']}/{summary['series']} series correct "
          f"({100 * summary['accuracy']:.2f} %) over {summary['studies']} studies in {summary['seconds']} s")
    for title, table in (("kind", summary["by_kind"]), ("configuration", summary["by_config"])):
        print(f"\n| {title} | correct | series |\n| --- | ---: | ---: |")
        for name, (right, total) in table.items():
            print(f"| {name} | {right} | {total} |")
    for mismatch in summary["mismatches"]:
        print(f"MISMATCH seed {mismatch['seed']} {mismatch['kind']}: expected {mismatch['expected']}, "
              f"got {mismatch['predicted']} ({mismatch['reason']})")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``evaluate`` sub-command."""
    parser = subparsers.add_parser("evaluate", help="measure a stage on fresh generated studies", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=("roles", "detection", "grading", "reports", "cancer", "bilsky", "real"), help="what to evaluate")
    parser.add_argument("--count", type=int,
                        help="number of studies (default 200; detection: per field of view, default 10; grading 60; "
                             "reports 500; cancer 60; bilsky: MR studies and as many CT, 40)")
    parser.add_argument("--seed", type=int,
                        help="first seed (roles 900000, detection 910000, grading 930000, reports 940000, cancer 950000, "
                             "bilsky 960000)")
    parser.add_argument("--models", type=Path, default=Path("models"), help="detection, grading, cancer: models folder")
    parser.add_argument("--vertebrae", choices=("detected", "truth", "none"), default="detected",
                        help="grading, cancer, bilsky: frame discs, bodies and canal priors from detected vertebrae (the "
                             "app) or the true ones (the later model alone); bilsky also: none (canal detector alone)")
    parser.add_argument("--perturb", default="none",
                        help="detection: comma-separated image perturbations (none, noise, contrast, resolution, rotation)")
    parser.add_argument("--anatomy", default="standard",
                        help="detection: standard, or L6 / T13 for spines with that transitional vertebra (scored on the "
                             "fields of view that image it)")
    parser.add_argument("--ct-unenhanced", action="store_true",
                        help="bilsky: render the CT studies without intravenous contrast (the graders expect contrast-enhanced CT)")
    parser.add_argument("--data-root", type=Path,
                        help="real: the folder holding FastCleverSeg's ImageDatasets (training/real/fastcleverseg.py)")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test", help="real: which subjects")
    parser.add_argument("--jobs", type=int, default=1, help="studies evaluated in parallel (processes)")
    parser.add_argument("--json", type=Path, help="also write the summary as JSON here")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        print("evaluate: --count must be at least 1", file=sys.stderr)
        return 2
    if args.vertebrae == "none" and args.target != "bilsky":
        print("evaluate: --vertebrae none is for bilsky only", file=sys.stderr)
        return 2
    if args.target == "detection":
        return _run_detection(args)
    if args.target == "grading":
        return _run_grading(args)
    if args.target == "reports":
        return _run_reports(args)
    if args.target == "cancer":
        return _run_cancer(args)
    if args.target == "bilsky":
        return _run_bilsky(args)
    if args.target == "real":
        return _run_real(args)
    summary = evaluate_roles(args.count or 200, args.seed or EVALUATION_FIRST_SEED, args.jobs)
    _print_roles(summary)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["correct"] == summary["series"] else 1


def _run_detection(args: argparse.Namespace) -> int:
    from training.evaluate_detection import (
        ANATOMIES, DETECTION_EVALUATION_FIRST_SEED, PERTURBATIONS, evaluate_detection, print_table,
    )

    perturbations = [p.strip() for p in args.perturb.split(",") if p.strip()]
    unknown = set(perturbations) - set(PERTURBATIONS)
    if unknown:
        print(f"evaluate: unknown perturbation(s) {sorted(unknown)}; choose from {PERTURBATIONS}", file=sys.stderr)
        return 2
    if args.anatomy not in ANATOMIES:
        print(f"evaluate: unknown anatomy {args.anatomy!r}; choose from {ANATOMIES}", file=sys.stderr)
        return 2
    count = args.count or 10
    summary = evaluate_detection(count, args.models, perturbations, args.seed or DETECTION_EVALUATION_FIRST_SEED, args.jobs,
                                 args.anatomy)
    arguments = f"detection --count {count} --jobs {args.jobs} --models {args.models}"
    if perturbations != ["none"]:
        arguments += f" --perturb {','.join(perturbations)}"
    if args.anatomy != "standard":
        arguments += f" --anatomy {args.anatomy}"
    if args.seed:
        arguments += f" --seed {args.seed}"
    return _finish(summary, arguments, print_table, args.json)


def _run_grading(args: argparse.Namespace) -> int:
    from training.evaluate_grading import GRADING_EVALUATION_FIRST_SEED, evaluate_grading, print_tables

    summary = evaluate_grading(args.count or 60, args.models, args.vertebrae, args.seed or GRADING_EVALUATION_FIRST_SEED, args.jobs)
    return _finish(summary, f"grading --count {summary['studies']} --vertebrae {args.vertebrae} --models {args.models}",
                   print_tables, args.json)


def _run_reports(args: argparse.Namespace) -> int:
    from training.reports.evaluate import REPORTS_EVALUATION_FIRST_SEED, evaluate_report_labeller, print_tables

    summary = evaluate_report_labeller(args.count or 500, args.seed or REPORTS_EVALUATION_FIRST_SEED)
    return _finish(summary, f"reports --count {summary['studies']} --seed {summary['first_seed']}", print_tables, args.json)


def _run_cancer(args: argparse.Namespace) -> int:
    from training.evaluate_cancer import CANCER_EVALUATION_FIRST_SEED, evaluate_cancer, print_tables

    summary = evaluate_cancer(args.count or 60, args.models, args.vertebrae, args.seed or CANCER_EVALUATION_FIRST_SEED, args.jobs)
    return _finish(summary, f"cancer --count {summary['studies']} --vertebrae {args.vertebrae} --models {args.models}",
                   print_tables, args.json)


def _run_bilsky(args: argparse.Namespace) -> int:
    from training.evaluate_bilsky import BILSKY_EVALUATION_FIRST_SEED, evaluate_bilsky, print_tables

    summary = evaluate_bilsky(args.count or 40, args.models, args.vertebrae, args.seed or BILSKY_EVALUATION_FIRST_SEED, args.jobs,
                              ct_contrast=not args.ct_unenhanced)
    unenhanced = " --ct-unenhanced" if args.ct_unenhanced else ""
    return _finish(summary, f"bilsky --count {args.count or 40} --vertebrae {args.vertebrae}{unenhanced} --models {args.models}",
                   print_tables, args.json)


def _run_real(args: argparse.Namespace) -> int:
    from training.evaluate_real import evaluate_real, print_tables

    if args.data_root is None or not (args.data_root / "ImageDatasets").is_dir():
        print("evaluate real: --data-root must be the folder holding ImageDatasets/ (FastCleverSeg)", file=sys.stderr)
        return 2
    summary = evaluate_real(args.data_root, args.models, args.split, jobs=args.jobs)
    return _finish(summary, f"real --data-root {args.data_root} --split {args.split} --models {args.models}",
                   print_tables, args.json)


def _finish(summary: dict[str, Any], arguments: str, print_tables: Callable[[dict[str, Any]], None], json_path: Path | None) -> int:
    """Record the command that reproduces ``summary`` in it, print its tables, write its JSON."""
    summary["command"] = f"python -m training evaluate {arguments}" + (f" --json {json_path}" if json_path else "")
    print_tables(summary)
    if json_path:
        write_summary_json(summary, json_path)
    return 0
