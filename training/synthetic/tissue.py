"""Tissue properties and the MR / CT signal models of the synthetic spine phantom.

Every voxel of the phantom is a mixture of *tissues* (see :class:`Tissue`). A tissue has
relaxation times for its water and its fat compartment, a proton density, a fat fraction,
an apparent diffusion coefficient and a CT number. :func:`tissue_signals` turns a table of
per-subject tissue properties into one signal value per tissue for a given contrast, using
the textbook signal equations:

* spin echo / turbo spin echo: ``S = PD · (1 − e^(−TR/T1)) · e^(−TE/T2)``
* inversion recovery (STIR):   ``S = PD · |1 − 2e^(−TI/T1) + e^(−TR/T1)| · e^(−TE/T2)`` (magnitude)
* spoiled gradient echo:       ``S = PD · sin α (1 − E1) / (1 − cos α E1) · e^(−TE/T2*)``
* diffusion weighting:         ``S_b = S_0 · e^(−b · ADC)``
* spectral fat saturation multiplies the fat compartment by a small residual.

Water and fat compartments are evaluated separately and added by fat fraction, so marrow
(30–70 % fat depending on age) is bright on T1 and on T2-TSE and darkens on STIR/fat-sat, a
Modic 2 change (fatty) brightens on T1, and a metastasis (fat replaced) darkens on T1.

Values are 1.5 T literature values (Stanisz 2005, Gold 2004, de Bazelaire 2004 and spine MRI
texts); T1 of water-based tissues grows with field strength roughly as ``B0^0.35``
(:func:`field_scaled_t1`), fat T1 a little less, T2 shrinks slightly. Each subject jitters
every property (:func:`sample_tissue_table`), so intensities vary widely between studies.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Tissue(IntEnum):
    """Tissue classes painted by the phantom (values index the property tables)."""

    AIR = 0
    FAT = 1  # subcutaneous, epidural, foraminal and retroperitoneal fat
    MUSCLE = 2
    SKIN = 3
    CORTICAL_BONE = 4
    MARROW = 5  # vertebral cancellous bone (trabeculae + red/yellow marrow)
    ANNULUS = 6
    NUCLEUS = 7  # nucleus pulposus; its T2 is also set per disc by the degeneration grade
    CSF = 8
    CORD = 9
    NERVE = 10  # cauda equina and exiting nerve roots
    LIGAMENT = 11  # ligamentum flavum, facet capsule
    DARK_LIGAMENT = 12  # anterior/posterior longitudinal ligament, dura-like low signal
    FLOWING_BLOOD = 13  # aorta, IVC, vertebral arteries: flow voids on spin echo
    VISCERA = 14  # bowel, liver, kidneys, pelvic organs (textured)
    LUNG = 15
    BRAIN = 16
    METASTASIS_LYTIC = 17
    METASTASIS_SCLEROTIC = 18
    MARROW_OEDEMA = 19  # Modic 1, acute fracture oedema
    MARROW_FATTY = 20  # Modic 2
    MARROW_SCLEROTIC = 21  # Modic 3, endplate sclerosis
    TUMOUR_SOFT = 22  # epidural / paravertebral soft-tissue tumour
    JOINT_FLUID = 23  # facet and atlanto-dental joints
    CARTILAGE = 24  # costal cartilage, endplate cartilage
    LIVER = 25  # liver (and spleen): homogeneous solid organ


N_TISSUES = len(Tissue)


@dataclass(frozen=True)
class TissueTable:
    """Per-subject tissue properties, one entry per :class:`Tissue` (arrays of shape ``(N_TISSUES,)``).

    Attributes:
        t1_water_ms, t2_water_ms: relaxation times of the water compartment at 1.5 T (ms).
        t2_star_factor: T2*/T2 ratio used by gradient echo (trabecular bone ≪ 1).
        t1_fat_ms, t2_fat_ms: fat compartment (T2 is the long apparent TSE value, J-coupling).
        proton_density: relative proton density, 0..1.
        fat_fraction: fraction of the signal-bearing protons that are fat, 0..1.
        adc_mm2_s: apparent diffusion coefficient (mm²/s).
        hu: CT number at 120 kVp (Hounsfield units).
        hu_kvp_slope: HU change per kVp below 120 (bone and contrast-like tissues rise at low kVp).
        hu_iv_contrast: HU added by intravenous iodinated contrast in the portal venous phase of a
            staging CT, at 120 kVp (:data:`PORTAL_VENOUS_ENHANCEMENT_HU`).
        mr_texture, ct_texture_hu: amplitude of the tissue's texture (relative for MR, HU for CT).
    """

    t1_water_ms: np.ndarray
    t2_water_ms: np.ndarray
    t2_star_factor: np.ndarray
    t1_fat_ms: np.ndarray
    t2_fat_ms: np.ndarray
    proton_density: np.ndarray
    fat_fraction: np.ndarray
    adc_mm2_s: np.ndarray
    hu: np.ndarray
    hu_kvp_slope: np.ndarray
    hu_iv_contrast: np.ndarray
    mr_texture: np.ndarray
    ct_texture_hu: np.ndarray

    def with_overrides(self, **columns: np.ndarray) -> "TissueTable":
        """A copy with some columns replaced (used for per-disc / per-vertebra variants)."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values.update(columns)
        return TissueTable(**values)

    def rows(self, index: np.ndarray) -> "TissueTable":
        """Table restricted/reordered to ``index`` (an integer array)."""
        return TissueTable(**{name: getattr(self, name)[index] for name in self.__dataclass_fields__})


# Reference values at 1.5 T: (T1w, T2w, T2*/T2, PD, fat fraction, ADC 1e-3 mm²/s, HU, HU/kVp,
# MR texture, CT texture HU). Fat compartments use T1 ≈ 280 ms and TSE T2 ≈ 150 ms for all tissues.
_REFERENCE: dict[Tissue, tuple[float, ...]] = {
    Tissue.AIR: (1000, 1, 1.0, 0.0, 0.0, 0.0, -1000, 0.0, 0.0, 5),
    Tissue.FAT: (800, 60, 0.6, 0.95, 0.92, 0.1, -100, -0.3, 0.05, 8),
    Tissue.MUSCLE: (1050, 38, 0.7, 0.80, 0.04, 1.5, 50, 0.0, 0.10, 10),
    Tissue.SKIN: (800, 45, 0.7, 0.75, 0.10, 1.0, 60, 0.0, 0.05, 8),
    Tissue.CORTICAL_BONE: (1000, 2, 0.3, 0.06, 0.0, 0.1, 1150, 4.0, 0.20, 120),
    Tissue.MARROW: (900, 55, 0.25, 0.85, 0.50, 0.4, 210, 1.2, 0.12, 70),
    Tissue.ANNULUS: (1000, 55, 0.6, 0.70, 0.0, 1.2, 85, 0.0, 0.08, 12),
    Tissue.NUCLEUS: (1200, 130, 0.8, 0.90, 0.0, 1.8, 90, 0.0, 0.06, 10),
    Tissue.CSF: (3800, 1800, 0.9, 1.0, 0.0, 3.0, 8, 0.0, 0.02, 5),
    Tissue.CORD: (800, 80, 0.8, 0.75, 0.0, 1.0, 35, 0.0, 0.04, 5),
    Tissue.NERVE: (850, 75, 0.8, 0.70, 0.0, 1.2, 35, 0.0, 0.35, 5),  # strong texture: separate roots
    Tissue.LIGAMENT: (700, 45, 0.6, 0.60, 0.05, 1.0, 70, 0.0, 0.06, 8),
    Tissue.DARK_LIGAMENT: (800, 8, 0.5, 0.30, 0.0, 0.8, 80, 0.0, 0.03, 8),
    Tissue.FLOWING_BLOOD: (1400, 15, 1.0, 0.10, 0.0, 2.5, 40, 0.0, 0.10, 4),
    Tissue.VISCERA: (700, 65, 0.5, 0.80, 0.10, 1.6, 45, 0.0, 0.12, 15),
    Tissue.LUNG: (1200, 30, 0.05, 0.06, 0.0, 2.0, -850, 0.0, 0.30, 60),
    Tissue.BRAIN: (850, 90, 0.8, 0.80, 0.0, 0.8, 35, 0.0, 0.05, 5),
    Tissue.METASTASIS_LYTIC: (1250, 95, 0.6, 0.90, 0.03, 0.9, 45, 0.2, 0.15, 15),
    Tissue.METASTASIS_SCLEROTIC: (1000, 35, 0.3, 0.35, 0.02, 0.6, 900, 3.0, 0.15, 150),
    Tissue.MARROW_OEDEMA: (1150, 95, 0.4, 0.90, 0.18, 1.2, 200, 1.0, 0.10, 60),
    Tissue.MARROW_FATTY: (900, 55, 0.3, 0.90, 0.85, 0.3, 40, 0.3, 0.10, 40),
    Tissue.MARROW_SCLEROTIC: (1000, 30, 0.2, 0.35, 0.15, 0.4, 650, 2.5, 0.10, 90),
    Tissue.TUMOUR_SOFT: (1100, 85, 0.7, 0.85, 0.02, 1.0, 45, 0.0, 0.12, 10),
    Tissue.JOINT_FLUID: (2800, 600, 0.8, 0.95, 0.0, 2.8, 20, 0.0, 0.02, 5),
    Tissue.CARTILAGE: (1000, 40, 0.6, 0.70, 0.0, 1.2, 110, 0.2, 0.05, 10),
    Tissue.LIVER: (600, 45, 0.6, 0.75, 0.05, 1.3, 60, 0.0, 0.04, 6),
}


#: Enhancement (HU at 120 kVp) of a portal venous phase staging CT, the CT Hallinan 2023 grades
#: epidural disease on (intravenous contrast was an inclusion criterion): blood pool and solid organs
#: rise most, enhancing tumour soft tissue rises from about the cord's density (45 against 35 HU)
#: to 85-115 HU against unenhanced CSF, cord and fat. Tissues not listed do not enhance.
PORTAL_VENOUS_ENHANCEMENT_HU: dict[Tissue, float] = {
    Tissue.FLOWING_BLOOD: 130.0,
    Tissue.VISCERA: 50.0,
    Tissue.LIVER: 55.0,
    Tissue.MUSCLE: 10.0,
    Tissue.SKIN: 10.0,
    Tissue.MARROW: 15.0,
    Tissue.MARROW_OEDEMA: 25.0,
    Tissue.METASTASIS_LYTIC: 45.0,
    Tissue.TUMOUR_SOFT: 55.0,
    Tissue.DARK_LIGAMENT: 10.0,  # dura and the epidural venous plexus along it
    Tissue.NERVE: 5.0,
    Tissue.CORD: 5.0,
}

#: Iodine attenuation per kVp below 120, relative to its 120 kVp value (about +30 % at 100 kVp).
IODINE_KVP_SLOPE = 0.015


def field_scaled_t1(t1_ms: np.ndarray, field_strength_t: float, exponent: float = 0.35) -> np.ndarray:
    """T1 at ``field_strength_t`` from a 1.5 T value (T1 ∝ B0^exponent for water-based tissue)."""
    return t1_ms * (field_strength_t / 1.5) ** exponent


def sample_tissue_table(rng: np.random.Generator, age_years: float, jitter: float = 0.08) -> TissueTable:
    """Per-subject tissue properties: the reference table with lognormal jitter on every value.

    Marrow fat fraction grows with age (≈ 0.25 at 20 y to ≈ 0.65 at 80 y) and cancellous HU falls
    with age (≈ 260 → 120 HU), as in the normal ageing spine.
    """
    ref = np.array([_REFERENCE[t] for t in Tissue], dtype=float)

    def jittered(column: int, scale: float = jitter) -> np.ndarray:
        return ref[:, column] * np.exp(rng.normal(0.0, scale, N_TISSUES))

    fat_fraction = np.clip(jittered(4, 0.10), 0.0, 0.97)
    age_fraction = float(np.clip((age_years - 20.0) / 60.0, 0.0, 1.2))
    fat_fraction[Tissue.MARROW] = float(np.clip(0.25 + 0.40 * age_fraction + rng.normal(0, 0.07), 0.12, 0.85))
    hu = ref[:, 6] + rng.normal(0.0, 1.0, N_TISSUES) * np.maximum(8.0, 0.08 * np.abs(ref[:, 6]))
    hu[Tissue.AIR] = -1000.0 + rng.normal(0, 5)
    hu[Tissue.MARROW] = float(np.clip(265.0 - 130.0 * age_fraction + rng.normal(0, 30), 60, 360))
    hu[Tissue.CORTICAL_BONE] = float(np.clip(rng.normal(1150, 150), 800, 1600))
    return TissueTable(
        t1_water_ms=jittered(0),
        t2_water_ms=jittered(1),
        t2_star_factor=np.clip(jittered(2, 0.15), 0.02, 1.0),
        t1_fat_ms=np.full(N_TISSUES, 280.0 * float(np.exp(rng.normal(0, 0.06)))),
        t2_fat_ms=np.full(N_TISSUES, 150.0 * float(np.exp(rng.normal(0, 0.08)))),
        proton_density=np.clip(jittered(3, 0.05), 0.0, 1.0),
        fat_fraction=fat_fraction,
        adc_mm2_s=jittered(5) * 1e-3,
        hu=hu,
        hu_kvp_slope=ref[:, 7],
        hu_iv_contrast=np.array([PORTAL_VENOUS_ENHANCEMENT_HU.get(t, 0.0) for t in Tissue]),
        mr_texture=jittered(8, 0.2),
        ct_texture_hu=jittered(9, 0.2),
    )


def _relaxation(
    t1: np.ndarray,
    t2: np.ndarray,
    t2_star_factor: np.ndarray,
    repetition_time_ms: float,
    echo_time_ms: float,
    inversion_time_ms: float | None,
    gradient_echo: bool,
    flip_angle_deg: float,
) -> np.ndarray:
    """Relative signal of one compartment (T1, T2 in ms, arrays) for one sequence."""
    e1 = np.exp(-repetition_time_ms / t1)
    if gradient_echo:
        alpha = np.radians(flip_angle_deg)
        longitudinal = np.sin(alpha) * (1.0 - e1) / (1.0 - np.cos(alpha) * e1)
        return longitudinal * np.exp(-echo_time_ms / np.maximum(t2 * t2_star_factor, 0.1))
    if inversion_time_ms is not None:
        longitudinal = np.abs(1.0 - 2.0 * np.exp(-inversion_time_ms / t1) + e1)
    else:
        longitudinal = 1.0 - e1
    return longitudinal * np.exp(-echo_time_ms / np.maximum(t2, 0.1))


def mr_signals(
    table: TissueTable,
    repetition_time_ms: float,
    echo_time_ms: float,
    inversion_time_ms: float | None = None,
    fat_suppressed: bool = False,
    field_strength_t: float = 1.5,
    gradient_echo: bool = False,
    diffusion_b: float | None = None,
    flip_angle_deg: float | None = None,
) -> np.ndarray:
    """Signal per table row for one MR sequence, in arbitrary units scaled to ~0..1000.

    Args mirror :class:`training.synthetic.phantom.MRSequence`. ``flip_angle_deg`` defaults to
    25° for gradient echo (T2*-weighted MERGE/MEDIC-like) and is ignored for spin echo.

    Returns:
        ``(len(table.hu),)`` float array.
    """
    t1_water = field_scaled_t1(table.t1_water_ms, field_strength_t)
    t1_fat = field_scaled_t1(table.t1_fat_ms, field_strength_t, exponent=0.2)
    t2_scale = (field_strength_t / 1.5) ** -0.1
    flip = 25.0 if flip_angle_deg is None else flip_angle_deg
    args = (repetition_time_ms, echo_time_ms, inversion_time_ms, gradient_echo, flip)
    water = _relaxation(t1_water, table.t2_water_ms * t2_scale, table.t2_star_factor, *args)
    fat = _relaxation(t1_fat, table.t2_fat_ms * t2_scale, table.t2_star_factor, *args)
    if fat_suppressed:
        fat = fat * 0.06  # residual fat after spectral saturation
    signal = table.proton_density * ((1.0 - table.fat_fraction) * water + table.fat_fraction * fat)
    if diffusion_b is not None and diffusion_b > 0:
        # Fat is (chemically) suppressed in every clinical DWI; its diffusion is negligible.
        signal = table.proton_density * (1.0 - table.fat_fraction) * water * np.exp(-diffusion_b * table.adc_mm2_s)
    return 1000.0 * signal


def ct_numbers(table: TissueTable, kvp: float, iv_contrast: float = 0.0) -> np.ndarray:
    """CT number per table row (HU) at tube voltage ``kvp``; ``iv_contrast`` scales the portal
    venous enhancement (0 unenhanced, 1 a typical staging CT)."""
    iodine = iv_contrast * (1.0 + IODINE_KVP_SLOPE * (120.0 - kvp))
    return table.hu + table.hu_kvp_slope * (120.0 - kvp) + iodine * table.hu_iv_contrast
