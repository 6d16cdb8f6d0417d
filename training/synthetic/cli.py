"""``python -m training generate``: write synthetic spine studies with ground truth.

Each study goes to ``OUT/study_<seed>/`` (``study/`` DICOM folder, ``truth.json``, ``report.txt``);
``--rsna-layout`` additionally writes the RSNA-2024-format CSVs and DICOM tree under ``OUT/rsna/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from operators.core.levels import TRANSITIONAL_AFTER
from training.synthetic.study import FIELDS_OF_VIEW, KINDS, LAYOUTS, StudyConfig, generate_study


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``generate`` sub-command."""
    parser = subparsers.add_parser(
        "generate",
        help="write synthetic DICOM spine studies with truth.json and report.txt",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int, default=0, help="first seed (studies use seed, seed+1, …)")
    parser.add_argument("--count", type=int, default=1, help="number of studies")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--fov", choices=FIELDS_OF_VIEW, help="force the field of view")
    parser.add_argument("--modality", choices=("mr", "ct", "mr+ct"), help="force the modalities")
    parser.add_argument("--layout", choices=LAYOUTS, help="force the study folder layout")
    parser.add_argument("--kinds", type=_kinds, help=f"force the series kinds, comma-separated ({', '.join(KINDS)})")
    parser.add_argument("--cancer", choices=("yes", "no"), help="force subjects with or without spinal cancer")
    parser.add_argument("--transitional", choices=sorted(TRANSITIONAL_AFTER),
                        help="force spines with a sixth lumbar (L6) or a thirteenth thoracic (T13) vertebra")
    parser.add_argument("--ct-contrast", action="store_true",
                        help="render CT as contrast-enhanced (portal venous) staging CT, as the CT Bilsky grader expects")
    parser.add_argument("--rsna-layout", action="store_true", help="also write RSNA-2024-format CSVs under OUT/rsna")
    parser.add_argument("--jobs", type=int, default=1, help="studies generated in parallel (processes)")
    parser.set_defaults(run=run)


def _kinds(text: str) -> tuple[str, ...]:
    """argparse type for ``--kinds``: a comma-separated list of known series kinds."""
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"unknown series kinds {unknown}; choose from {', '.join(KINDS)}")
    return kinds


def _one(args: tuple[int, Path, StudyConfig]) -> tuple[int, Path, dict[str, Any], float, float]:
    """Generate one study; returns (seed, folder, truth, wall seconds, CPU seconds of this process)."""
    seed, out, config = args
    start, cpu = time.perf_counter(), time.process_time()
    study_dir = out / f"study_{seed:06d}"
    truth = generate_study(seed, study_dir, config)
    return seed, study_dir, truth, time.perf_counter() - start, time.process_time() - cpu


def run(args: argparse.Namespace) -> int:
    """Generate ``args.count`` studies; print one line per study; return the exit status."""
    if args.count < 1:
        print("generate: --count must be at least 1", file=sys.stderr)
        return 2
    cancer = None if args.cancer is None else args.cancer == "yes"
    config = StudyConfig(field_of_view=args.fov, modalities=args.modality, layout=args.layout, series_kinds=args.kinds,
                         cancer=cancer, transitional=args.transitional, ct_contrast=args.ct_contrast)
    jobs = [(seed, args.out, config) for seed in range(args.seed, args.seed + args.count)]
    taken = [args.out / f"study_{seed:06d}" / "study" for seed, _, _ in jobs]
    taken = [path for path in taken if path.is_dir() and any(path.iterdir())]
    if taken:
        print(f"generate: {taken[0]} already holds a study; choose another --out or --seed", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = _report_each(pool.map(_one, jobs))
    else:
        results = _report_each(map(_one, jobs))
    if args.rsna_layout:
        # Imported here: only this option needs the TEXT helper's module.
        from training.synthetic.rsna_format import write_rsna_layout

        write_rsna_layout([r[2] for r in results], [r[1] / "study" for r in results], args.out / "rsna")
        print(f"RSNA layout written to {args.out / 'rsna'}")
    return 0


def _report_each(iterator: Any) -> list[tuple[int, Path, dict[str, Any], float, float]]:
    """Print one line per finished study (wall and CPU time: CPU is what contention cannot inflate)."""
    results = []
    for seed, study_dir, truth, seconds, cpu in iterator:
        roles = sorted({s["expected_role"] for s in truth["series"]} - {"unused"})
        print(f"seed {seed}: {truth['field_of_view']:8s} {len(truth['series']):2d} series "
              f"({', '.join(roles) or 'no role'}) in {seconds:.2f} s (CPU {cpu:.2f} s) -> {study_dir}", flush=True)
        results.append((seed, study_dir, truth, seconds, cpu))
    return results
