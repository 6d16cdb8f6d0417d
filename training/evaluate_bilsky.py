"""``python -m training evaluate bilsky``: Bilsky grades of axial MR and CT images on fresh generated studies.

Studies come from seeds no training run uses (first seed 960000; ``--count`` MR studies, then as
many CT studies): MR studies with sagittal T1 + T2 and axial T2 (every other one thoracic, the rest
any field of view), CT studies with an axial CT only (vertebrae are found on its sagittal
reformat), rendered as contrast-enhanced staging CT (the CT Hallinan 2023 grades; intravenous contrast
was an inclusion criterion) unless ``ct_contrast`` is off (``--ct-unenhanced``); two in three with
cancer forced. Each goes through the app's core — series selection,
detection and labelling (``--vertebrae detected``, the default; ``truth`` takes the true vertebrae;
``none`` drops the localisation, so the canal detector works alone), the canal prior and detector,
the ROI and the grader — with the ONNX models in ``--models``. Graded images are matched to the
truth by SOP Instance UID; a true axial image left ungraded counts in ``missed`` (and as a
disagreement nowhere: the agreement is over graded images).

Metrics (design §6; Hallinan 2022 Table 2, 2023 Tables 6–9): Gwet's AC1 and Cohen's kappa on the
full scale (MR 6 grades, CT 3 classes) and dichotomous (high grade 1c/2/3 vs the rest); high-grade
sensitivity and specificity per image; per level (most severe grade per study and level) and per
scan (any high grade in the study) agreement; level accuracy of the graded images.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from operators.core.bilsky_pipeline import BILSKY_CLASSES, BILSKY_MODELS, CANAL_MODEL, grade_study
from operators.core.gradings import bilsky_is_high_grade
from operators.core.onnx_models import open_model
from training.bilsky.agreement import cohen_kappa, gwet_ac1, sensitivity_specificity
from training.evaluate import map_jobs, metric_cell
from training.grading.cache import GeneratedStudy
from training.synthetic.study import StudyConfig, generate_study

#: First seed of Bilsky evaluation studies (training 170000–172199, validation 840000–842029).
BILSKY_EVALUATION_FIRST_SEED = 960_000
#: The issue's targets (Hallinan 2022: AC1 0.92 internal / 0.94 external; 2023: kappa 0.872 / 0.844).
TARGETS: dict[str, float] = {"mr_ac1": 0.94, "mr_high_sensitivity": 0.976, "mr_high_specificity": 0.936, "ct_kappa": 0.87}


def study_config(index: int, count: int, ct_contrast: bool = True) -> tuple[str, StudyConfig]:
    """Evaluation study ``index`` of ``2 × count``: MR first, then CT (module docstring)."""
    cancer = True if index % 3 != 2 else None
    if index < count:
        return "MR", StudyConfig(series_kinds=("sag_t1", "sag_t2", "ax_t2"), cancer=cancer,
                                 field_of_view="thoracic" if index % 2 == 0 else None)
    return "CT", StudyConfig(series_kinds=("ct_axial",), cancer=cancer, ct_contrast=ct_contrast)


def evaluate_study(seed: int, index: int, count: int, workdir: Path, models: Path, vertebrae_from: str,
                   ct_contrast: bool = True) -> dict[str, Any]:
    """Grade one generated study; returns its truth and predicted grade per axial image."""
    study_dir = workdir / f"study_{seed}"
    modality, config = study_config(index, count, ct_contrast)
    truth = generate_study(seed, study_dir, config)
    try:
        study = GeneratedStudy.read(study_dir)
        vertebrae = [] if vertebrae_from == "none" else study.vertebrae(vertebrae_from, models)
        graders = {m: open_model(name, models) for m, name in BILSKY_MODELS.items()}
        findings = grade_study(study.scan, study.decisions, vertebrae, open_model(CANAL_MODEL, models), graders)
        predicted = {entry.sop_instance_uid: entry for entry in findings.entries}
        images = []
        for entry in truth["bilsky"]:
            graded = predicted.get(entry["sop_instance_uid"])
            images.append({
                "modality": entry["modality"], "level": entry["level"], "truth": entry["grade"],
                "predicted": None if graded is None else BILSKY_CLASSES[graded.modality][int(np.argmax(graded.probabilities))],
                "predicted_level": None if graded is None else graded.level,
            })
        return {"seed": seed, "modality": modality, "images": images, "warnings": sorted({w.code for w in findings.warnings})}
    finally:
        shutil.rmtree(study_dir, ignore_errors=True)


def _evaluate_job(job: tuple[int, int, int, Path, Path, str, bool]) -> dict[str, Any]:
    return evaluate_study(*job)


def _agreement(truth: list[str], predicted: list[str], classes: tuple[str, ...]) -> dict[str, Any]:
    """AC1, kappa (full scale and dichotomous) and high-grade sensitivity/specificity of paired grades."""
    if not truth:
        return {"count": 0}
    t, p = [classes.index(g) for g in truth], [classes.index(g) for g in predicted]
    high_t, high_p = [bilsky_is_high_grade(g) for g in truth], [bilsky_is_high_grade(g) for g in predicted]
    sensitivity, specificity = sensitivity_specificity(high_t, high_p)
    return {
        "count": len(truth), "high_grade": int(sum(high_t)),
        "counts": {c: truth.count(c) for c in classes},
        "ac1": gwet_ac1(t, p, len(classes)), "kappa": cohen_kappa(t, p, len(classes)),
        "ac1_high_grade": gwet_ac1(list(map(int, high_t)), list(map(int, high_p)), 2),
        "kappa_high_grade": cohen_kappa(list(map(int, high_t)), list(map(int, high_p)), 2),
        "high_sensitivity": sensitivity, "high_specificity": specificity,
    }


def _worst(grades: list[str], classes: tuple[str, ...]) -> str:
    return max(grades, key=classes.index)


def summarise(studies: list[dict[str, Any]], vertebrae_from: str, seconds: float, first_seed: int,
              ct_contrast: bool = True) -> dict[str, Any]:
    """Agreement per modality: per image, per level and per scan (module docstring)."""
    by_modality: dict[str, Any] = {}
    for modality, classes in BILSKY_CLASSES.items():
        scans = [s for s in studies if s["modality"] == modality]
        images = [i for s in scans for i in s["images"] if i["modality"] == modality]
        graded = [i for i in images if i["predicted"] is not None]
        levels_t, levels_p, scans_t, scans_p = [], [], [], []
        for scan in scans:
            scored = [i for i in scan["images"] if i["predicted"] is not None]
            for level in sorted({i["level"] for i in scored}):
                at_level = [i for i in scored if i["level"] == level]
                levels_t.append(_worst([i["truth"] for i in at_level], classes))
                levels_p.append(_worst([i["predicted"] for i in at_level], classes))
            if scored:
                scans_t.append(any(bilsky_is_high_grade(i["truth"]) for i in scored))
                scans_p.append(any(bilsky_is_high_grade(i["predicted"]) for i in scored))
        with_level = [i for i in graded if i["predicted_level"] is not None]
        scan_sensitivity, scan_specificity = sensitivity_specificity(scans_t, scans_p) if scans_t else (None, None)
        by_modality[modality] = {
            "studies": len(scans), "images": len(images), "missed": len(images) - len(graded),
            "per_image": _agreement([i["truth"] for i in graded], [i["predicted"] for i in graded], classes),
            "per_level": _agreement(levels_t, levels_p, classes),
            "per_scan": {"scans": len(scans_t), "high_grade_scans": int(sum(scans_t)),
                         "sensitivity": scan_sensitivity, "specificity": scan_specificity},
            "level_accuracy": (sum(i["predicted_level"] == i["level"] for i in with_level) / len(with_level)) if with_level else None,
            "without_level": len(graded) - len(with_level),
        }
    return {"studies": len(studies), "first_seed": first_seed, "vertebrae": vertebrae_from, "ct_contrast": ct_contrast, "targets": TARGETS,
            "modalities": by_modality, "seconds": round(seconds, 1)}


def evaluate_bilsky(count: int, models: Path, vertebrae_from: str = "detected", first_seed: int = BILSKY_EVALUATION_FIRST_SEED,
                    jobs: int = 1, ct_contrast: bool = True) -> dict[str, Any]:
    """Run :func:`evaluate_study` on ``count`` MR and ``count`` CT studies (seeds ``first_seed`` …) and summarise."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="spine-map-bilsky-") as workdir:
        work = [(first_seed + i, i, count, Path(workdir), Path(models), vertebrae_from, ct_contrast) for i in range(2 * count)]
        studies = map_jobs(_evaluate_job, work, jobs)
    return summarise(studies, vertebrae_from, time.perf_counter() - started, first_seed, ct_contrast)


def _percent(value: float | None) -> str:
    cell = metric_cell(value, 100, 1)
    return cell if cell == "n/a" else f"{cell} %"


def markdown_tables(summary: dict[str, Any]) -> list[str]:
    """The evaluation as Markdown lines: one agreement table for both modalities."""
    framing = {"detected": "the detected and labelled vertebrae (the app's path)", "truth": "the true vertebrae",
               "none": "no localisation (canal detector alone)"}[summary["vertebrae"]]
    ct = "contrast-enhanced" if summary.get("ct_contrast", True) else "unenhanced"
    lines = [
        f"{summary['studies']} studies (first seed {summary['first_seed']}, {ct} CT); canal prior and levels from {framing}.",
        "",
        "| modality | unit | graded (missed) | high grade | AC1 | kappa | AC1 high/low | kappa high/low | "
        "high-grade sensitivity | specificity |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for modality, m in summary["modalities"].items():
        for unit in ("per_image", "per_level"):
            a = m[unit]
            if not a.get("count"):
                continue
            missed = f" ({m['missed']})" if unit == "per_image" else ""
            lines.append(
                f"| {modality} | {unit.replace('per_', '')} | {a['count']}{missed} | {a['high_grade']} | {metric_cell(a['ac1'])} | "
                f"{metric_cell(a['kappa'])} | {metric_cell(a['ac1_high_grade'])} | {metric_cell(a['kappa_high_grade'])} | "
                f"{_percent(a['high_sensitivity'])} | {_percent(a['high_specificity'])} |")
        scan = m["per_scan"]
        if scan["scans"]:
            lines.append(f"| {modality} | scan | {scan['scans']} | {scan['high_grade_scans']} | | | | | "
                         f"{_percent(scan['sensitivity'])} | {_percent(scan['specificity'])} |")
    lines.append("")
    lines.append("Level of the graded images: " + "; ".join(
        f"{modality} {_percent(m['level_accuracy'])} correct, {m['without_level']} without level"
        for modality, m in summary["modalities"].items() if m["images"]) + ".")
    return lines


def print_tables(summary: dict[str, Any]) -> None:
    print("\n".join(markdown_tables(summary)))
    print(f"\n{summary['seconds']} s")
