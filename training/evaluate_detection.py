"""``python -m training evaluate detection``: vertebra detection and labelling on fresh generated studies.

Studies come from seeds no training run uses (first seed 910000): every field of view (cervical,
thoracic, lumbar, whole spine) with sagittal T1, T2 and STIR. Each study is scored with each
sagittal sequence alone and with all of them fused, through the same core the app runs
(:mod:`operators.core.vertebra_pipeline`) and the exported ONNX models in ``--models``.

``--perturb`` re-scores the same studies with images pushed outside the generator's ranges (which
the networks never saw in training):

* ``noise`` — extra Gaussian noise σ = 12 % of the 99th percentile (SNR ≈ 8 → about 4–6);
* ``contrast`` — gamma 0.4 or 2.5 on the normalised image (training gamma 0.5–2);
* ``resolution`` — in-plane pixels 2.4× coarser (1.0–2.9 mm; the generator stays ≤ 1.2 mm);
* ``rotation`` — the image rotated 30° in plane (training ±20° augmentation, generator ≤ 20° obliquity).

``--anatomy L6`` or ``--anatomy T13`` scores studies whose spine has that transitional vertebra (the
generator's own spines are standard C1…S1), over the fields of view that image it
(:data:`TRANSITIONAL_FIELDS_OF_VIEW`); the same seeds as standard anatomy, so a study differs only in
the spine drawn.

Metrics (design §6), over true vertebrae fully in view in at least one scored series (C1 has no
body and is never counted): a prediction matches a true vertebra when its centroid lies within
0.5 × the true body height of the true centroid (one-to-one, nearest first). Precision = matched
predictions / predictions, where predictions of a vertebra that is only partly in view are neither
right nor wrong — such a prediction matches within 0.5 × the body height or anywhere inside the true
body's box (height × depth × width along its own axes), because a slab that cuts a body sideways
leaves its lateral centre unmeasurable; recall = matched / true; IDR = true vertebrae whose match has the right
level / true; LE = mean 3D distance (mm) of matched centroids. Transitional levels are also counted on
their own: how many true L6/T13 in view got their level, and how many predictions named L6/T13 where
the matched vertebra is another level or none (a false transitional label shifts the levels above it).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from operators.core.dicom_io import scan_study_folder
from operators.core.geometry import VolumeGeometry
from operators.core.levels import LEVELS_WITHOUT_BODY, TRANSITIONAL_AFTER
from operators.core.onnx_models import OnnxModel, open_model
from operators.core.vertebra_detection import fuse_series
from operators.core.vertebra_pipeline import (
    APPEARANCE_MODEL,
    CONTEXT_MODEL,
    DETECTOR_MODEL,
    SagittalStack,
    detect_in_stack,
    label_vertebrae,
)
from training.evaluate import map_jobs
from training.synthetic.study import StudyConfig, generate_study

#: First seed of detection evaluation studies (training uses 100000–199999, validation 800000+).
DETECTION_EVALUATION_FIRST_SEED = 910_000

FIELDS_OF_VIEW = ("lumbar", "whole", "thoracic", "cervical")
SEQUENCES = ("sag_t1", "sag_t2", "sag_stir")
PERTURBATIONS = ("none", "noise", "contrast", "resolution", "rotation")
#: ``--anatomy`` choices: the generator's standard spine or a forced transitional level.
ANATOMIES = ("standard", *TRANSITIONAL_AFTER)
#: Fields of view that image each transitional level (an L6 sits above the sacrum, a T13 below T12).
TRANSITIONAL_FIELDS_OF_VIEW: dict[str, tuple[str, ...]] = {"L6": ("lumbar", "whole"), "T13": ("lumbar", "thoracic", "whole")}



@dataclass(frozen=True)
class Score:
    """Counts for one (study, sequence set): summed over studies into the table."""

    true: int = 0
    predicted: int = 0
    matched: int = 0
    ignored: int = 0  # predictions matching a vertebra only partly in view
    identified: int = 0
    distance_sum_mm: float = 0.0
    transitional: int = 0  # true L6/T13 in view
    transitional_identified: int = 0
    false_transitional: int = 0  # predictions named L6/T13 that match another level or nothing

    def __add__(self, other: "Score") -> "Score":
        return Score(*(a + b for a, b in zip(vars(self).values(), vars(other).values())))

    def metrics(self) -> dict[str, float]:
        counted = self.predicted - self.ignored
        return {
            "vertebrae": self.true,
            "precision": self.matched / counted if counted else 1.0,
            "recall": self.matched / self.true if self.true else 1.0,
            "idr": self.identified / self.true if self.true else 1.0,
            "le_mm": self.distance_sum_mm / self.matched if self.matched else float("nan"),
            "transitional": self.transitional,
            "transitional_identified": self.transitional_identified,
            "false_transitional": self.false_transitional,
        }


def nearest_first(pairs: Sequence[tuple[float, int, int]]) -> list[tuple[float, int, int]]:
    """One-to-one matches from candidate ``(distance, prediction, truth)`` pairs, nearest first."""
    used_predictions, used_truths, matches = set(), set(), []
    for distance, p, t in sorted(pairs):
        if p not in used_predictions and t not in used_truths:
            used_predictions.add(p)
            used_truths.add(t)
            matches.append((distance, p, t))
    return matches


def inside_body(point_mm: np.ndarray, vertebra: dict) -> bool:
    """Whether ``point_mm`` (LPS) lies in the true body's box: height × depth × width about its
    centroid, along its superior and anterior axes and their cross product. ``False`` for a truth
    without a box (the real datasets' placeholders beyond the annotated bodies)."""
    if "superior_axis" not in vertebra:
        return False
    superior, anterior = np.asarray(vertebra["superior_axis"]), np.asarray(vertebra["anterior_axis"])
    offset = np.asarray(point_mm) - vertebra["centroid_mm"]
    along_axes = np.abs([offset @ superior, offset @ anterior, offset @ np.cross(superior, anterior)])
    return bool(np.all(along_axes <= 0.5 * np.array([vertebra["height_mm"], vertebra["depth_mm"], vertebra["width_mm"]])))


def score_study(truth: dict, series_uids: Sequence[str], predictions: Sequence[tuple[str, np.ndarray]]) -> Score:
    """Score predicted ``(level, centroid_mm)`` against the truth for the scored series."""
    candidates = [v for v in truth["vertebrae"] if v["level"] not in LEVELS_WITHOUT_BODY]
    in_view = [any(v["fully_in_view"].get(uid, False) for uid in series_uids) for v in candidates]
    pairs = []
    for p, (_, centroid) in enumerate(predictions):
        for t, vertebra in enumerate(candidates):
            distance = float(np.linalg.norm(np.asarray(centroid) - vertebra["centroid_mm"]))
            if distance <= 0.5 * vertebra["height_mm"] or (not in_view[t] and inside_body(centroid, vertebra)):
                pairs.append((distance, p, t))
    matches = nearest_first(pairs)
    truth_of = {p: t for _, p, t in matches}
    score = Score(true=sum(in_view), predicted=len(predictions),
                  transitional=sum(seen and v["level"] in TRANSITIONAL_AFTER for seen, v in zip(in_view, candidates)),
                  false_transitional=sum(
                      level in TRANSITIONAL_AFTER and (p not in truth_of or candidates[truth_of[p]]["level"] != level)
                      for p, (level, _) in enumerate(predictions)))
    for distance, p, t in matches:
        if not in_view[t]:
            score = score + Score(ignored=1)
            continue
        identified = predictions[p][0] == candidates[t]["level"]
        score = score + Score(matched=1, distance_sum_mm=distance, identified=int(identified),
                              transitional_identified=int(identified and candidates[t]["level"] in TRANSITIONAL_AFTER))
    return score


def perturb(stack: SagittalStack, kind: str, rng: np.random.Generator) -> SagittalStack:
    """The stack with one out-of-range change (see the module docstring); ``none`` returns it as is."""
    pixels, geometry = stack.pixels, stack.geometry
    if kind == "noise":
        pixels = pixels + rng.normal(0.0, 0.12, pixels.shape).astype(np.float32)
    elif kind == "contrast":
        gamma = 0.4 if rng.random() < 0.5 else 2.5
        pixels = np.clip(pixels, 0.0, None) ** gamma
    elif kind == "resolution":
        pixels = ndimage.zoom(pixels, (1.0, 1.0 / 2.4, 1.0 / 2.4), order=1)
        # zoom keeps the first and last pixel centres: spacing grows by (n - 1) / (n' - 1).
        scale = (np.array(geometry.shape[1:]) - 1) / (np.array(pixels.shape[1:]) - 1)
        affine = geometry.affine.copy()
        affine[:3, 1:3] *= scale
        geometry = VolumeGeometry(affine, pixels.shape)
    elif kind == "rotation":
        angle = np.deg2rad(30.0)
        matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        centre = (np.array(pixels.shape[1:]) - 1) / 2.0
        offset = centre - matrix @ centre
        # Output (r, c) samples input matrix·(r, c) + offset, so its LPS position follows the same map.
        pixels = np.stack([ndimage.affine_transform(image, matrix, offset, order=1) for image in pixels])
        affine = geometry.affine.copy()
        affine[:3, 3] = affine[:3, 3] + affine[:3, 1:3] @ offset
        affine[:3, 1:3] = affine[:3, 1:3] @ matrix
        geometry = VolumeGeometry(affine, pixels.shape)
    return SagittalStack(stack.series_instance_uid, pixels.astype(np.float32), geometry)


def _networks(models: Path) -> tuple[OnnxModel, OnnxModel, OnnxModel]:
    return tuple(open_model(name, models) for name in (DETECTOR_MODEL, APPEARANCE_MODEL, CONTEXT_MODEL))


def evaluate_study(seed: int, fov: str, workdir: Path, models: Path, perturbations: Sequence[str],
                   anatomy: str = "standard") -> list[dict[str, Any]]:
    """Score one generated study for each sequence alone and all together, under each perturbation."""
    detector, appearance, context = _networks(models)
    study_dir = workdir / f"study_{seed}"
    transitional = None if anatomy == "standard" else anatomy
    truth = generate_study(seed, study_dir, StudyConfig(field_of_view=fov, series_kinds=SEQUENCES, transitional=transitional))
    try:
        kinds = {s["series_instance_uid"]: s["kind"] for s in truth["series"]}
        scan = scan_study_folder(study_dir / "study")
        originals = []
        for series in scan.series:
            if kinds.get(series.series_instance_uid) in SEQUENCES:
                loaded = series.stacks[0].load()
                originals.append(SagittalStack.from_pixels(series.series_instance_uid, loaded.pixels, loaded.geometry))
        rows = []
        for perturbation in perturbations:
            rng = np.random.default_rng(seed)
            stacks = [perturb(stack, perturbation, rng) for stack in originals]
            rows.extend(_score_sequence_sets(truth, kinds, stacks, detector, appearance, context, perturbation, fov, seed))
        return rows
    finally:
        shutil.rmtree(study_dir, ignore_errors=True)


def _score_sequence_sets(truth, kinds, stacks, detector, appearance, context, perturbation, fov, seed) -> list[dict[str, Any]]:
    per_stack, seconds = {}, {}
    for stack in stacks:
        started = time.perf_counter()
        per_stack[stack.series_instance_uid] = detect_in_stack(stack, detector)
        seconds[stack.series_instance_uid] = time.perf_counter() - started
    geometry_of = {s.series_instance_uid: s.geometry for s in stacks}

    def covers(uid: str, point: np.ndarray) -> bool:
        return bool(geometry_of[uid].contains(np.asarray(point)[None])[0])

    rows = []
    sets = [(kind, [s for s in stacks if kinds[s.series_instance_uid] == kind]) for kind in SEQUENCES]
    sets.append(("all", list(stacks)))
    for name, chosen in sets:
        if not chosen:
            continue
        started = time.perf_counter()
        fused = fuse_series([per_stack[s.series_instance_uid] for s in chosen], covers,
                            series_uids=[s.series_instance_uid for s in chosen])
        labelled, _ = label_vertebrae(fused, chosen, appearance, context)
        label_seconds = time.perf_counter() - started
        predictions = [(item.level, item.vertebra.centroid_mm) for item in labelled]
        score = score_study(truth, [s.series_instance_uid for s in chosen], predictions)
        rows.append({
            "seed": seed, "fov": fov, "sequences": name, "perturbation": perturbation, "score": vars(score),
            "seconds": label_seconds + sum(seconds[s.series_instance_uid] for s in chosen),
            "transitional": truth["anatomy"]["transitional"],
        })
    return rows


def _evaluate_job(job: tuple[int, str, Path, Path, tuple[str, ...], str]) -> list[dict[str, Any]]:
    return evaluate_study(*job)


def evaluate_detection(count_per_fov: int, models: Path, perturbations: Sequence[str] = ("none",),
                       first_seed: int = DETECTION_EVALUATION_FIRST_SEED, jobs: int = 1,
                       anatomy: str = "standard") -> dict[str, Any]:
    """Run :func:`evaluate_study` over ``count_per_fov`` studies per field of view and summarise.

    Seeds: ``first_seed + 1000 × (index in FIELDS_OF_VIEW) + i``; a transitional ``anatomy`` scores
    only the fields of view that image it (same seeds). ``jobs`` > 1 runs studies in parallel
    processes (``--seconds`` per study are then contended and only indicative).
    """
    if anatomy not in ANATOMIES:
        raise ValueError(f"anatomy must be one of {ANATOMIES}, not {anatomy!r}")
    fields = FIELDS_OF_VIEW if anatomy == "standard" else TRANSITIONAL_FIELDS_OF_VIEW[anatomy]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="spine-map-detection-") as workdir:
        work = [
            (first_seed + 1000 * FIELDS_OF_VIEW.index(fov) + i, fov, Path(workdir), Path(models), tuple(perturbations), anatomy)
            for fov in fields
            for i in range(count_per_fov)
        ]
        per_study = map_jobs(_evaluate_job, work, jobs)
    rows = [row for study in per_study for row in study]
    return {**summarise(rows, time.perf_counter() - started), "first_seed": first_seed, "anatomy": anatomy}


def summarise(rows: Sequence[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Per (perturbation, field of view, sequence set): precision, recall, IDR, LE; plus failures."""
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = f"{row['perturbation']}|{row['fov']}|{row['sequences']}"
        entry = table.setdefault(key, {"score": Score(), "studies": 0, "seconds": []})
        entry["score"] = entry["score"] + Score(**row["score"])
        entry["studies"] += 1
        entry["seconds"].append(row["seconds"])
    summary = {
        key: {**entry["score"].metrics(), "studies": entry["studies"],
              "median_seconds": float(np.median(entry["seconds"]))}
        for key, entry in sorted(table.items())
    }
    imperfect = [
        {k: row[k] for k in ("seed", "fov", "sequences", "perturbation", "transitional", "score")}
        for row in rows
        if row["score"]["identified"] < row["score"]["true"] or row["score"]["matched"] + row["score"]["ignored"] < row["score"]["predicted"]
    ]
    return {"table": summary, "imperfect": imperfect, "seconds": round(seconds, 1)}


def markdown_table(summary: dict[str, Any], fused_only: bool = False) -> str:
    """The summary's rows as a Markdown table (the model cards quote it); ``fused_only``: the
    ``all`` sequence sets alone."""
    lines = ["| perturbation | field of view | sequences | studies | vertebrae | precision % | recall % | IDR % | LE mm "
             "| L6/T13 found | false L6/T13 |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, m in summary["table"].items():
        perturbation, fov, sequences = key.split("|")
        if fused_only and sequences != "all":
            continue
        lines.append(f"| {perturbation} | {fov} | {sequences} | {m['studies']} | {m['vertebrae']} | "
                     f"{100 * m['precision']:.2f} | {100 * m['recall']:.2f} | {100 * m['idr']:.2f} | {m['le_mm']:.2f} | "
                     f"{m['transitional_identified']}/{m['transitional']} | {m['false_transitional']} |")
    return "\n".join(lines)


def print_table(summary: dict[str, Any]) -> None:
    print(f"anatomy: {summary['anatomy']}")
    print(markdown_table(summary))
    seconds = {key: m["median_seconds"] for key, m in summary["table"].items()}
    print("median s/study: " + ", ".join(f"{key} {value:.2f}" for key, value in seconds.items()))
    print(f"\n{len(summary['imperfect'])} (study, sequence set) rows not perfect; {summary['seconds']} s")
