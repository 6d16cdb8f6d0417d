"""Sampling of spine pathology for the synthetic phantom, with its labels.

Everything here is *what* is wrong with a subject; :mod:`training.synthetic.anatomy` turns it
into geometry and :mod:`training.synthetic.phantom` into signal. Labels are derived from the
sampled severities with the project's grading tables so that the truth JSON, the RSNA CSVs and
the rendered images agree:

* Disc degeneration: one latent score per disc = age + level predisposition (L4/L5, L5/S1,
  C5/C6 highest) + subject + disc noise. Pfirrmann 1–5 comes from it; narrowing 0–3 from
  Pfirrmann; herniation, central canal / foraminal / subarticular stenosis (0–3), endplate
  defects, Modic changes and spondylolisthesis are correlated with it (degeneration clusters
  at L4/L5, L5/S1 and with age). ``pathology_rate`` shifts every threshold; 0 gives a healthy
  spine (Pfirrmann ≤ 2, nothing else).
* Cancer (when the subject has it): vertebral metastases (focal / multiple / diffuse, lytic or
  sclerotic), pathological and osteoporotic fractures (wedge / biconcave / crush, 20–60 %
  height loss) and epidural disease with a target Bilsky grade at its level (the anatomy
  module places the mass front so that the axial cross-sections really show that grade).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from operators.core.gradings import BILSKY_MR_GRADES, rsna_severity_from_stenosis_grade
from operators.core.levels import RSNA_DISCS, disc_levels

#: Disc predisposition to degeneration (added to the latent score); other discs get the region default.
_DISC_BIAS: dict[str, float] = {
    "C2/C3": -0.5, "C3/C4": 0.0, "C4/C5": 0.3, "C5/C6": 0.8, "C6/C7": 0.6, "C7/T1": -0.4,
    "T11/T12": -0.2, "T12/T13": -0.1, "T12/L1": -0.1, "T13/L1": 0.0, "L1/L2": 0.0, "L2/L3": 0.2,
    "L3/L4": 0.6, "L4/L5": 1.1, "L5/S1": 1.0, "L5/L6": 1.0, "L6/S1": 0.8,
}
_HEIGHT_LOSS_BY_NARROWING = ((0.0, 0.08), (0.15, 0.30), (0.32, 0.50), (0.55, 0.72))


def _region(level: str) -> str:
    return {"C": "cervical", "T": "thoracic", "L": "lumbar", "S": "sacral"}[level[0]]


@dataclass
class DiscPathology:
    """Sampled state of one intervertebral disc (all severities 0 = none).

    Attributes:
        name: disc name, e.g. ``"L4/L5"``.
        pfirrmann: 1..5.
        narrowing: 0..3; ``height_loss`` its height-loss fraction (0..0.72).
        central_stenosis, foraminal_left/right, subarticular_left/right: 0..3 severities.
        herniation: ``"none" | "protrusion" | "extrusion"``; ``herniation_side`` −1 right
            paracentral, 0 central, +1 left paracentral; ``herniation_size_mm`` its AP depth;
            ``herniation_migration_mm`` signed cranio-caudal migration of an extrusion (+ caudal).
        listhesis_fraction: anterior slip of the upper vertebra as a fraction of its depth (0 none).
        upper_endplate_defect / lower_endplate_defect: Schmorl node / irregularity of the upper
            vertebra's inferior endplate / the lower vertebra's superior endplate.
        upper_modic / lower_modic: Modic type 0..3 in the upper / lower vertebra next to the disc.
        bulge_mm: circumferential annular bulge beyond the endplate margins.
    """

    name: str
    pfirrmann: int = 1
    narrowing: int = 0
    height_loss: float = 0.0
    central_stenosis: int = 0
    foraminal_left: int = 0
    foraminal_right: int = 0
    subarticular_left: int = 0
    subarticular_right: int = 0
    herniation: str = "none"
    herniation_side: int = 0
    herniation_size_mm: float = 0.0
    herniation_migration_mm: float = 0.0
    listhesis_fraction: float = 0.0
    upper_endplate_defect: bool = False
    lower_endplate_defect: bool = False
    upper_modic: int = 0
    lower_modic: int = 0
    bulge_mm: float = 0.0

    def gradings(self) -> dict[str, int]:
        """SpineNetV2 gradings (names and classes of ``SPINENET_GRADINGS``)."""
        return {
            "pfirrmann": self.pfirrmann,
            "narrowing": self.narrowing,
            "central_canal_stenosis": self.central_stenosis,
            "spondylolisthesis": int(self.listhesis_fraction > 0),
            "upper_endplate_defect": int(self.upper_endplate_defect),
            "lower_endplate_defect": int(self.lower_endplate_defect),
            "upper_marrow_change": int(self.upper_modic > 0),
            "lower_marrow_change": int(self.lower_modic > 0),
            "foraminal_stenosis_left": int(self.foraminal_left >= 2),
            "foraminal_stenosis_right": int(self.foraminal_right >= 2),
            "herniation": int(self.herniation != "none"),
        }

    def rsna(self) -> dict[str, str]:
        """RSNA 2024 severities for a lumbar disc (empty for discs RSNA does not grade)."""
        if self.name not in RSNA_DISCS:
            return {}
        return {
            "spinal_canal_stenosis": rsna_severity_from_stenosis_grade(self.central_stenosis),
            "left_neural_foraminal_narrowing": rsna_severity_from_stenosis_grade(self.foraminal_left),
            "right_neural_foraminal_narrowing": rsna_severity_from_stenosis_grade(self.foraminal_right),
            "left_subarticular_stenosis": rsna_severity_from_stenosis_grade(self.subarticular_left),
            "right_subarticular_stenosis": rsna_severity_from_stenosis_grade(self.subarticular_right),
        }

    def details(self) -> dict[str, object]:
        """Continuous / multi-class values behind the labels (for the truth JSON ``details``)."""
        return {
            "height_loss_fraction": round(self.height_loss, 3),
            "foraminal_severity": {"left": self.foraminal_left, "right": self.foraminal_right},
            "subarticular_severity": {"left": self.subarticular_left, "right": self.subarticular_right},
            "herniation_type": self.herniation,
            "herniation_side": {-1: "right", 0: "central", 1: "left"}[self.herniation_side],
            "herniation_size_mm": round(self.herniation_size_mm, 1),
            "listhesis_fraction": round(self.listhesis_fraction, 3),
            # Meyerding grade: slip < 25 % of the depth is grade 1, 25–50 % grade 2, …
            "listhesis_grade": int(self.listhesis_fraction / 0.25) + 1 if self.listhesis_fraction > 0 else 0,
            "modic_upper": self.upper_modic,
            "modic_lower": self.lower_modic,
        }


@dataclass
class MetastasisFocus:
    """One focal metastasis in a vertebral body, in body-relative units.

    ``centre`` is (s, a, l) as fractions of (height, depth, width) from the body centre
    (s positive caudal, a positive anterior, l positive left); ``radius_fraction`` of the
    body's smaller dimension; ``sclerotic`` picks the CT/MR phenotype.
    """

    centre: tuple[float, float, float]
    radius_fraction: float
    sclerotic: bool


@dataclass
class VertebraPathology:
    """Sampled cancer-related state of one vertebra.

    Attributes:
        level: vertebra name.
        metastasis_pattern: ``"none" | "focal" | "multiple" | "diffuse"``.
        foci: focal lesions (empty for none/diffuse).
        diffuse_sclerotic: phenotype of a diffuse infiltration.
        fracture: ``"none" | "wedge" | "biconcave" | "crush"``; ``height_loss`` 0.2–0.6 when fractured;
            ``pathological`` True for a fracture through a metastasis; ``oedema`` acute marrow oedema.
        epidural_grade: target Bilsky grade of epidural disease centred on this level ("0" none).
        epidural_anterior: True when the mass comes from the body (anterior epidural space), False
            when it grows from the posterior elements.
    """

    level: str
    metastasis_pattern: str = "none"
    foci: list[MetastasisFocus] = field(default_factory=list)
    diffuse_sclerotic: bool = False
    fracture: str = "none"
    height_loss: float = 0.0
    pathological: bool = False
    oedema: bool = False
    epidural_grade: str = "0"
    epidural_anterior: bool = True


@dataclass
class SubjectPathology:
    """All sampled pathology of one subject."""

    has_cancer: bool
    discs: dict[str, DiscPathology]
    vertebrae: dict[str, VertebraPathology]


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def _grade(latent: float, thresholds: tuple[float, ...]) -> int:
    return int(sum(latent > t for t in thresholds))


def sample_disc_pathology(
    rng: np.random.Generator, discs: list[str], age_years: float, pathology_rate: float
) -> dict[str, DiscPathology]:
    """Sample the degenerative state of every disc (see module docstring for the model)."""
    rate = float(np.clip(pathology_rate, 0.0, 1.0))
    healthy = rate <= 0.0
    shift = 2.2 * (1.0 - 2.0 * rate)  # > 0 raises every threshold (less pathology)
    subject = rng.normal(0.0, 0.6)
    result: dict[str, DiscPathology] = {}
    for name in discs:
        upper, lower = disc_levels(name)
        region = _region(lower) if upper[0] != lower[0] else _region(upper)
        default_bias = {"cervical": 0.0, "thoracic": -0.7, "lumbar": 0.3, "sacral": 0.5}[region]
        latent = 0.045 * (age_years - 40.0) + _DISC_BIAS.get(name, default_bias) + subject + rng.normal(0, 0.6)
        disc = DiscPathology(name=name)
        if healthy:
            disc.pfirrmann = 1 + int(latent > 0.8)
            disc.height_loss = float(rng.uniform(0.0, 0.06))
            result[name] = disc
            continue
        disc.pfirrmann = 1 + _grade(latent, tuple(t + shift for t in (-0.3, 0.6, 1.4, 2.3)))
        narrowing_probs = {1: (1, 0, 0, 0), 2: (0.9, 0.1, 0, 0), 3: (0.55, 0.4, 0.05, 0),
                           4: (0.1, 0.45, 0.35, 0.1), 5: (0, 0.1, 0.4, 0.5)}[disc.pfirrmann]
        disc.narrowing = int(rng.choice(4, p=narrowing_probs))
        low, high = _HEIGHT_LOSS_BY_NARROWING[disc.narrowing]
        disc.height_loss = float(rng.uniform(low, high))
        degeneration = latent - shift + 0.3 * disc.narrowing
        mobile = region in ("cervical", "lumbar") or name in ("T12/L1", "T13/L1", "T11/T12")
        if mobile and rng.random() < _sigmoid(degeneration - 2.4):
            disc.herniation = "extrusion" if rng.random() < 0.3 else "protrusion"
            disc.herniation_side = int(rng.choice([-1, 0, 1], p=[0.3, 0.4, 0.3]))
            scale = 0.6 if region == "cervical" else 1.0
            depth = rng.uniform(3.0, 6.0) if disc.herniation == "protrusion" else rng.uniform(5.0, 9.0)
            disc.herniation_size_mm = float(depth * scale)
            if disc.herniation == "extrusion":
                disc.herniation_migration_mm = float(rng.uniform(-6.0, 8.0))
        disc.bulge_mm = float(np.clip(0.3 + 0.5 * (disc.pfirrmann - 1) + rng.normal(0, 0.4), 0.0, 3.0))
        stenosis_bias = {"cervical": -0.2, "thoracic": -1.2, "lumbar": 0.0, "sacral": -0.6}[region]
        if name in ("L3/L4", "L4/L5"):
            stenosis_bias += 0.4
        herniation_push = {"none": 0.0, "protrusion": 0.6, "extrusion": 1.0}[disc.herniation]
        central = degeneration + stenosis_bias + herniation_push + rng.normal(0, 0.6)
        disc.central_stenosis = _grade(central, (2.0, 3.0, 4.0))
        for side, side_sign in (("left", 1), ("right", -1)):
            paracentral = 0.7 if disc.herniation_side == side_sign else 0.0
            foraminal = degeneration + 0.25 * disc.narrowing + stenosis_bias * 0.5 + rng.normal(0, 0.7)
            if name in ("L4/L5", "L5/S1", "C5/C6", "C6/C7"):
                foraminal += 0.3
            setattr(disc, f"foraminal_{side}", _grade(foraminal, (1.8, 2.8, 4.0)))
            subarticular = 0.6 * central + 0.4 * degeneration + paracentral + rng.normal(0, 0.5)
            setattr(disc, f"subarticular_{side}", _grade(subarticular, (1.9, 2.8, 3.9)))
        listhesis_p = {"L4/L5": 0.14, "L5/S1": 0.08, "L3/L4": 0.05, "C3/C4": 0.04, "C4/C5": 0.04}.get(name, 0.0)
        if rng.random() < listhesis_p * rate * 2.0 * (0.5 + max(age_years - 40.0, 0.0) / 40.0):
            disc.listhesis_fraction = float(rng.uniform(0.08, 0.3))
        # Schmorl nodes / endplate irregularity: thoracolumbar much more than cervical.
        defect_p = _sigmoid(degeneration - 2.0) * (0.3 if region == "cervical" else 1.0)
        disc.upper_endplate_defect = bool(rng.random() < defect_p)
        disc.lower_endplate_defect = bool(rng.random() < defect_p)
        if rng.random() < _sigmoid(degeneration - 2.1):
            modic_type = int(rng.choice([1, 2, 3], p=[0.3, 0.6, 0.1]))
            both = rng.random() < 0.7
            first_upper = rng.random() < 0.5
            disc.upper_modic = modic_type if (both or first_upper) else 0
            disc.lower_modic = modic_type if (both or not first_upper) else 0
        result[name] = disc
    return result


def sample_vertebra_pathology(
    rng: np.random.Generator,
    levels: list[str],
    age_years: float,
    has_cancer: bool,
    cord_levels: list[str],
) -> dict[str, VertebraPathology]:
    """Sample metastases, fractures and epidural disease (nothing unless ``has_cancer``).

    Args:
        levels: vertebra names cranial → caudal (C1 … S1, with any transitional level).
        cord_levels: levels whose canal holds the spinal cord (candidates for epidural disease).
    """
    result = {level: VertebraPathology(level=level) for level in levels}
    if not has_cancer:
        return result
    candidates = [level for level in levels if level != "C1"]
    # Thoracic spine carries most metastases, then lumbar, then cervical (haematogenous spread).
    weights = np.array([{"C": 0.5, "T": 1.6, "L": 1.2, "S": 0.8}[lv[0]] for lv in candidates])
    count = int(np.clip(rng.geometric(0.3), 1, 12))
    seed_index = int(rng.choice(len(candidates), p=weights / weights.sum()))
    involved: set[str] = {candidates[seed_index]}
    while len(involved) < count:
        if rng.random() < 0.6:  # skip lesions cluster around earlier ones
            anchor = candidates.index(sorted(involved)[int(rng.integers(len(involved)))])
            index = int(np.clip(anchor + rng.integers(-3, 4), 0, len(candidates) - 1))
        else:
            index = int(rng.choice(len(candidates), p=weights / weights.sum()))
        involved.add(candidates[index])
    phenotype = rng.choice(["lytic", "sclerotic", "mixed"], p=[0.5, 0.3, 0.2])
    for level in sorted(involved, key=candidates.index):  # set order varies with PYTHONHASHSEED
        vertebra = result[level]
        vertebra.metastasis_pattern = str(rng.choice(["focal", "multiple", "diffuse"], p=[0.5, 0.3, 0.2]))

        def sclerotic() -> bool:
            return phenotype == "sclerotic" or (phenotype == "mixed" and rng.random() < 0.5)

        if vertebra.metastasis_pattern == "diffuse":
            vertebra.diffuse_sclerotic = sclerotic()
        else:
            n_foci = 1 if vertebra.metastasis_pattern == "focal" else int(rng.integers(2, 5))
            size = (0.22, 0.38) if n_foci == 1 else (0.10, 0.2)
            for _ in range(n_foci):
                centre = (float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.3, 0.25)), float(rng.uniform(-0.3, 0.3)))
                vertebra.foci.append(MetastasisFocus(centre, float(rng.uniform(*size)), sclerotic()))
        if rng.random() < 0.22:
            vertebra.fracture = str(rng.choice(["wedge", "biconcave", "crush"], p=[0.5, 0.2, 0.3]))
            vertebra.height_loss = float(rng.uniform(0.2, 0.6))
            vertebra.pathological = True
    # Osteoporotic fractures in the elderly, typically mid-thoracic and thoracolumbar.
    if age_years > 55 and rng.random() < 0.35:
        osteoporotic = [lv for lv in ("T6", "T7", "T8", "T11", "T12", "L1", "L2") if lv in result]
        level = str(rng.choice(osteoporotic))
        if result[level].fracture == "none":
            result[level].fracture = str(rng.choice(["wedge", "biconcave"], p=[0.7, 0.3]))
            result[level].height_loss = float(rng.uniform(0.2, 0.5))
            result[level].oedema = bool(rng.random() < 0.5)
    # Epidural disease at one or two levels where the canal holds the cord.
    cord_candidates = [level for level in cord_levels if level in result and level != "C1"]
    if cord_candidates and rng.random() < 0.65:
        n_masses = 1 if rng.random() < 0.75 else 2
        for _ in range(n_masses):
            metastatic = [lv for lv in cord_candidates if result[lv].metastasis_pattern != "none"]
            level = str(rng.choice(metastatic)) if metastatic and rng.random() < 0.8 else str(rng.choice(cord_candidates))
            vertebra = result[level]
            if vertebra.metastasis_pattern == "none":
                vertebra.metastasis_pattern = "focal"
                vertebra.foci.append(MetastasisFocus((0.0, -0.2, 0.0), 0.3, phenotype == "sclerotic"))
            vertebra.epidural_grade = str(rng.choice(BILSKY_MR_GRADES[1:]))
            vertebra.epidural_anterior = bool(rng.random() < 0.75)
            if vertebra.epidural_anterior:
                # The mass breaks out through the posterior cortex: make sure a focus reaches it.
                vertebra.foci.append(MetastasisFocus((0.0, -0.32, 0.0), 0.28, False))
    return result
