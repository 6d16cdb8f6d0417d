"""Names and classes of every grading spine-map produces: one home, used by the generator, the
models, the report schema and the SR writer.

* SpineNetV2 disc gradings (SpineNetV2 §3.4, Table 3), per intervertebral disc.
* RSNA 2024 lumbar degenerative conditions (Park et al.), per lumbar disc L1/L2 … L5/S1.
* Cancer findings per vertebra (SCT, Windsor et al.).
* Bilsky epidural spinal cord compression grades: MRI 6 grades (Hallinan 2022), CT 3 classes
  (Hallinan 2023).
"""

from __future__ import annotations

#: SpineNetV2 gradings → their class values, in model output order. Binary gradings are 0/1.
#: ``narrowing`` and ``central_canal_stenosis`` are 0 (none) … 3 (severe); Pfirrmann is 1 … 5.
SPINENET_GRADINGS: dict[str, tuple[int, ...]] = {
    "pfirrmann": (1, 2, 3, 4, 5),
    "narrowing": (0, 1, 2, 3),
    "central_canal_stenosis": (0, 1, 2, 3),
    "spondylolisthesis": (0, 1),
    "upper_endplate_defect": (0, 1),
    "lower_endplate_defect": (0, 1),
    "upper_marrow_change": (0, 1),
    "lower_marrow_change": (0, 1),
    "foraminal_stenosis_left": (0, 1),
    "foraminal_stenosis_right": (0, 1),
    "herniation": (0, 1),
}

#: RSNA 2024 LSDC conditions, as ``train.csv`` column prefixes.
RSNA_CONDITIONS: tuple[str, ...] = (
    "spinal_canal_stenosis",
    "left_neural_foraminal_narrowing",
    "right_neural_foraminal_narrowing",
    "left_subarticular_stenosis",
    "right_subarticular_stenosis",
)

#: RSNA 2024 condition names as written in ``train_label_coordinates.csv``.
RSNA_CONDITION_TITLES: dict[str, str] = {
    condition: " ".join(word.capitalize() for word in condition.split("_")) for condition in RSNA_CONDITIONS
}

#: RSNA 2024 severities, in order; the competition's log-loss weights are 1, 2, 4.
RSNA_SEVERITIES: tuple[str, ...] = ("Normal/Mild", "Moderate", "Severe")
RSNA_SEVERITY_WEIGHTS: dict[str, float] = {"Normal/Mild": 1.0, "Moderate": 2.0, "Severe": 4.0}

#: Per-vertebra cancer findings reported as probabilities (SCT).
CANCER_FINDINGS: tuple[str, ...] = ("metastasis", "fracture", "cord_compression")

#: Bilsky grades on axial MRI, in order of severity (Bilsky et al. 2010).
BILSKY_MR_GRADES: tuple[str, ...] = ("0", "1a", "1b", "1c", "2", "3")
#: MRI grades counted as high grade (surgery/radiotherapy decision threshold).
BILSKY_MR_HIGH_GRADES: frozenset[str] = frozenset({"1c", "2", "3"})

#: Bilsky classes on CT (Hallinan 2023): normal/none (0), low (1a, 1b), high (1c, 2, 3).
BILSKY_CT_CLASSES: tuple[str, ...] = ("normal", "low", "high")


def bilsky_ct_class(mr_grade: str) -> str:
    """Collapse an MRI Bilsky grade to the CT 3-class scheme (normal/low/high)."""
    if mr_grade not in BILSKY_MR_GRADES:
        raise ValueError(f"unknown Bilsky grade {mr_grade!r}")
    if mr_grade == "0":
        return "normal"
    return "high" if mr_grade in BILSKY_MR_HIGH_GRADES else "low"


def bilsky_is_high_grade(grade: str) -> bool:
    """Dichotomous high-grade flag for an MRI grade or a CT class."""
    if grade in BILSKY_CT_CLASSES:
        return grade == "high"
    if grade in BILSKY_MR_GRADES:
        return grade in BILSKY_MR_HIGH_GRADES
    raise ValueError(f"unknown Bilsky grade {grade!r}")


def rsna_severity_from_stenosis_grade(grade: int) -> str:
    """Map a 0–3 stenosis grade to the RSNA severity (0–1 Normal/Mild, 2 Moderate, 3 Severe)."""
    if grade not in (0, 1, 2, 3):
        raise ValueError(f"stenosis grade must be 0..3, not {grade!r}")
    return RSNA_SEVERITIES[max(0, grade - 1)]
