"""``python -m training evaluate real --data-root D``: detection and labelling on real annotated lumbar MRI.

Subjects come from the FastCleverSeg datasets (:mod:`training.real.fastcleverseg`), one split
(default ``test``; VB1 is never read). Each subject is rebuilt as the thick-slice sagittal stack a
scanner writes and run through the app's core (:mod:`operators.core.vertebra_pipeline`) with the
ONNX models in ``--models`` — the same path as ``evaluate detection``.

Metrics (design §6, as ``evaluate detection``): a prediction matches an annotated body when its
centroid lies within 0.5 × the body's height of the mask's centre of mass. The masks cover some of
the bodies in view (VB3 L1–L5, VB2 seven bodies ending at L5): predictions matching a body beyond
the annotated ones (placed by continuing the annotated spacing) are neither right nor wrong, any
other unmatched prediction is a false positive. Subjects whose level count is doubtful
(:attr:`~training.real.fastcleverseg.RealSubject.level_doubt`) are listed and left out.

Disc datasets (IVD) have no body masks: the discs between adjacent predicted levels (the app's
disc centres, midway between the two centroids) are matched to the disc masks' centres within half
the median spacing of the true discs; disc recall, disc identification rate (the right name) and the
mean distance are reported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from operators.core.vertebra_pipeline import LabelledVertebra, SagittalStack, detect_vertebrae, label_vertebrae, report_entries
from operators.core.volume_extraction import disc_frames
from training.evaluate import map_jobs
from training.evaluate_detection import Score, _networks, nearest_first, score_study
from training.real.fastcleverseg import DATASETS, RealSubject, find_subjects, load_subject, sagittal_stack, truth_entries

#: Where ``evaluate detection --json`` keeps the synthetic numbers printed beside the real ones.
SYNTHETIC_EVALUATION_JSON = Path("docs/evaluation/detection.json")


def predict_subject(stack: SagittalStack, models: Path) -> list[LabelledVertebra]:
    """Detection, fusion and labelling of one stack, as the app runs them."""
    detector, appearance, context = _networks(models)
    labelled, _ = label_vertebrae(detect_vertebrae([stack], detector), [stack], appearance, context)
    return labelled


def score_discs(subject: RealSubject, labelled: Sequence[LabelledVertebra]) -> dict[str, float]:
    """Counts for the disc datasets (see the module docstring)."""
    true_names = list(subject.disc_centres_mm)
    true_centres = np.array([subject.disc_centres_mm[name] for name in true_names])
    radius = 0.5 * float(np.median(np.linalg.norm(np.diff(true_centres, axis=0), axis=1)))
    frames = disc_frames(report_entries(labelled))
    pairs = [
        (distance, p, t)
        for p, frame in enumerate(frames) for t, centre in enumerate(true_centres)
        if (distance := float(np.linalg.norm(frame.centre_mm - centre))) <= radius
    ]
    matches = nearest_first(pairs)
    return {
        "true": len(true_names), "matched": len(matches),
        "identified": sum(int(frames[p].level == true_names[t]) for _, p, t in matches),
        "distance_sum_mm": sum(distance for distance, _, _ in matches),
    }


def evaluate_subject(job: tuple[str, Path, Path]) -> dict[str, Any]:
    """Score one subject file; the row ``summarise`` reads."""
    dataset, path, models = job
    subject = load_subject(dataset, path)
    uid = f"real.{subject.name}"
    stack = sagittal_stack(subject, uid)
    started = time.perf_counter()
    labelled = predict_subject(SagittalStack.from_pixels(uid, stack.pixels, stack.geometry), models)
    row: dict[str, Any] = {
        "subject": subject.name, "dataset": dataset, "level_doubt": subject.level_doubt,
        "seconds": time.perf_counter() - started,
        "predicted_levels": [v.level for v in labelled],
    }
    if DATASETS[dataset].structure == "disc":
        row["discs"] = score_discs(subject, labelled)
    else:
        truth = {"vertebrae": truth_entries(stack, uid)}
        row["true_levels"] = [level for level, _ in stack.bodies]
        row["score"] = vars(score_study(truth, [uid], [(v.level, v.vertebra.centroid_mm) for v in labelled]))
    return row


def evaluate_real(data_root: Path, models: Path, split: str = "test", datasets: Sequence[str] = tuple(DATASETS),
                  jobs: int = 1) -> dict[str, Any]:
    """Run :func:`evaluate_subject` over every subject of ``split`` and summarise per dataset."""
    started = time.perf_counter()
    work = [(dataset, path, Path(models)) for dataset, path in find_subjects(data_root, datasets, split)]
    rows = map_jobs(evaluate_subject, work, jobs)
    return summarise(rows, split, time.perf_counter() - started)


def summarise(rows: Sequence[dict[str, Any]], split: str, seconds: float) -> dict[str, Any]:
    """Per dataset: precision, recall, IDR, LE over bodies, or disc recall/IDR/LE; doubtful subjects apart."""
    table: dict[str, dict[str, Any]] = {}
    for dataset in DATASETS:
        kept = [r for r in rows if r["dataset"] == dataset and not r["level_doubt"]]
        if not kept:
            continue
        if "discs" in kept[0]:
            counts = {k: sum(r["discs"][k] for r in kept) for k in kept[0]["discs"]}
            table[dataset] = {
                "subjects": len(kept), "discs": counts["true"],
                "disc_recall": counts["matched"] / counts["true"] if counts["true"] else None,
                "disc_idr": counts["identified"] / counts["true"] if counts["true"] else None,
                "disc_le_mm": counts["distance_sum_mm"] / counts["matched"] if counts["matched"] else None,
            }
        else:
            score = sum((Score(**r["score"]) for r in kept), Score())
            table[dataset] = {"subjects": len(kept), **score.metrics()}
        table[dataset]["median_seconds"] = float(np.median([r["seconds"] for r in kept]))
    return {
        "split": split, "table": table, "rows": list(rows), "seconds": round(seconds, 1),
        "doubtful": [{"subject": r["subject"], "why": r["level_doubt"]} for r in rows if r["level_doubt"]],
    }


def print_tables(summary: dict[str, Any]) -> None:
    print(f"Real annotated MRI, {summary['split']} split (VB1 reserved, never read):\n")
    print("| dataset | subjects | vertebrae | precision % | recall % | IDR % | LE mm | s/subject |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for dataset, m in summary["table"].items():
        if "vertebrae" in m:
            print(f"| {dataset} | {m['subjects']} | {m['vertebrae']} | {100 * m['precision']:.1f} | {100 * m['recall']:.1f} | "
                  f"{100 * m['idr']:.1f} | {m['le_mm']:.2f} | {m['median_seconds']:.2f} |")
    if SYNTHETIC_EVALUATION_JSON.exists():
        synthetic = json.loads(SYNTHETIC_EVALUATION_JSON.read_text())["table"].get("none|lumbar|all")
        if synthetic:
            print(f"| synthetic lumbar (T1+T2+STIR, {SYNTHETIC_EVALUATION_JSON}) | {synthetic['studies']} studies | "
                  f"{synthetic['vertebrae']} | {100 * synthetic['precision']:.1f} | {100 * synthetic['recall']:.1f} | "
                  f"{100 * synthetic['idr']:.1f} | {synthetic['le_mm']:.2f} | {synthetic['median_seconds']:.2f} |")
    discs = {d: m for d, m in summary["table"].items() if "discs" in m}
    if discs:
        print("\n| dataset | subjects | discs | disc recall % | disc IDR % | disc LE mm |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for dataset, m in discs.items():
            cells = [f"{100 * m[k]:.1f}" if m[k] is not None else "n/a" for k in ("disc_recall", "disc_idr")]
            le = f"{m['disc_le_mm']:.2f}" if m["disc_le_mm"] is not None else "n/a"
            print(f"| {dataset} | {m['subjects']} | {m['discs']} | {cells[0]} | {cells[1]} | {le} |")
    for doubt in summary["doubtful"]:
        print(f"left out (levels doubtful): {doubt['subject']}: {doubt['why']}")
    print(f"\n{summary['seconds']} s")
