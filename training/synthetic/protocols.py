"""Vendor protocol tables for the synthetic study generator: what each scanner calls a sequence and
which acquisition parameters it records.

:func:`sample_mr_protocol` turns a series *kind* (``sag_t1``, ``sag_stir``, ``ax_t2_gre`` …) into
physically consistent timing parameters (TR/TE/TI/ETL/flip), the matching
:class:`~training.synthetic.phantom.MRSequence` that the phantom renders with, and the vendor's DICOM
tags (ScanningSequence, SequenceVariant, ScanOptions, SequenceName, ImageType, ProtocolName and a
typical SeriesDescription). :func:`sample_ct_protocol` does the same for CT series. Descriptions are
the vendor's usual ones here; the study code decides separately when to blank, generalise or
falsify them — the tags stay physically true.

Parameter ranges (ms unless stated; 3 T values in brackets where they differ)
----------------------------------------------------------------------------
* T1 TSE/FSE (sag_t1, ax_t1, sag_t1_fs, sag_t1_post): TR 380–800 [450–900], TE 7–18, ETL 2–6.
* T2 TSE/FSE (sag_t2, ax_t2, cor_t2): TR 2500–5200, TE 80–125, ETL 13–32.
* STIR (sag_stir): TR 3000–6500, TE 30–70, TI 135–170 [170–230], ETL 9–24.
* Fat-suppressed T2 (sag_t2_fs): spectral fat-sat TSE (ScanOptions FS / SFS) or a Dixon water
  image (ImageType …\\DIXON\\WATER), TR 2500–5000, TE 60–100.
* GRE T2* axial (ax_t2_gre, e.g. Siemens MEDIC / GE MERGE): TR 400–750, TE 12–25 [8–16], flip 20–35°.
* 3-plane localiser: GRE, TR 5–10, TE 1.5–5, flip 20–40°, ImageType …\\LOCALIZER.
* DWI: single-shot EPI, TR 3000–6500, TE 55–95, b = 0/50 and 600–1000 s/mm²; ADC is DERIVED.
* CT: 100/120/140 kVp, 150–450 mAs, bone or soft-tissue kernel per vendor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from training.synthetic.phantom import CTContrast, MRSequence

#: Gyromagnetic ratio of 1H, MHz/T (ImagingFrequency = 42.577 × B0).
_GAMMA_MHZ_PER_T = 42.577478


@dataclass(frozen=True)
class Vendor:
    """One scanner vendor's names and tag habits."""

    key: str
    manufacturer: str
    mr_models_15t: tuple[str, ...]
    mr_models_3t: tuple[str, ...]
    ct_models: tuple[str, ...]
    station_names: tuple[str, ...]
    mr_image_type: tuple[str, ...]


VENDORS: dict[str, Vendor] = {
    "siemens": Vendor(
        "siemens",
        "SIEMENS",
        ("Avanto", "Aera", "Espree", "MAGNETOM Sola", "Avanto_fit"),
        ("Skyra", "Prisma_fit", "MAGNETOM Vida", "Verio", "Skyra_fit"),
        ("SOMATOM Force", "SOMATOM Definition AS+", "SOMATOM go.Top"),
        ("MRC35114", "AWP45231", "MRC18889", "CTAWP73022"),
        ("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"),
    ),
    "ge": Vendor(
        "ge",
        "GE MEDICAL SYSTEMS",
        ("SIGNA Explorer", "Optima MR450w", "Signa HDxt", "SIGNA Artist"),
        ("SIGNA Premier", "DISCOVERY MR750", "SIGNA Architect", "Signa HDxt"),
        ("Revolution CT", "Optima CT660", "LightSpeed VCT"),
        ("GEMR1", "MR750SMR", "RADMR02", "GECT3"),
        ("ORIGINAL", "PRIMARY", "OTHER"),
    ),
    "philips": Vendor(
        "philips",
        "Philips Medical Systems",
        ("Ingenia", "Achieva", "Intera", "Ingenia Ambition X"),
        ("Ingenia", "Achieva dStream", "Ingenia Elition X"),
        ("IQon - Spectral CT", "Ingenuity CT", "Brilliance 64"),
        ("PHILIPS-3K5VQ2", "MR-ST001", "HOST-6AB12", "PHILIPS-CT1"),
        ("ORIGINAL", "PRIMARY", "M_SE", "M", "SE"),
    ),
    "canon": Vendor(
        "canon",
        "CANON_MEC",
        ("Vantage Orian", "Vantage Elan", "Vantage Titan"),
        ("Vantage Galan 3T", "Vantage Centurian"),
        ("Aquilion ONE", "Aquilion Prime SP"),
        ("CANONMR01", "TSBMR3T", "AQPRIME1"),
        ("ORIGINAL", "PRIMARY", "OTHER"),
    ),
}

#: Typical SeriesDescription/ProtocolName per vendor and kind (first one doubles as ProtocolName).
_DESCRIPTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "siemens": {
        "sag_t1": ("t1_tse_sag", "t1_tse_sag_384", "T1 TSE SAG"),
        "sag_t2": ("t2_tse_sag", "t2_tse_sag_p2", "T2 TSE SAG 3mm"),
        "sag_stir": ("t2_tirm_sag", "t2_tirm_sag_STIR", "STIR SAG"),
        "sag_t2_fs": ("t2_tse_fs_sag", "t2_tse_sag_fs", "t2_tse_dixon_sag_W"),
        "sag_t1_fs": ("t1_tse_fs_sag", "t1_tse_sag_fs"),
        "sag_t1_post": ("t1_tse_sag_KM", "t1_tse_fs_sag_post", "t1_tse_sag +C"),
        "ax_t2": ("t2_tse_tra", "t2_tse_tra_384", "T2 TSE AX"),
        "ax_t1": ("t1_tse_tra",),
        "ax_t2_gre": ("t2_me2d_tra", "t2_medic_tra", "MEDIC AX"),
        "cor_t2": ("t2_tse_cor", "t2_tse_cor_p2"),
        "localizer": ("localizer", "AAHead_Scout", "localizer_3pl"),
        "dwi": ("ep2d_diff_sag", "resolve_diff_sag"),
        "dwi_axial": ("ep2d_diff_tra", "resolve_diff_tra"),
    },
    "ge": {
        "sag_t1": ("SAG T1 FSE", "Sag T1", "SAG T1"),
        "sag_t2": ("SAG T2 FSE", "Sag T2 FRFSE", "SAG T2"),
        "sag_stir": ("Sag STIR", "SAG STIR", "Sag T2 STIR"),
        "sag_t2_fs": ("SAG T2 FS", "Sag T2 FSE FS", "Sag T2 FLEX WATER"),
        "sag_t1_fs": ("SAG T1 FS",),
        "sag_t1_post": ("SAG T1 +C", "POST SAG T1 FS"),
        "ax_t2": ("AX T2 FSE", "Ax T2 FRFSE", "AX T2"),
        "ax_t1": ("AX T1 FSE",),
        "ax_t2_gre": ("AX T2* MERGE", "Ax MERGE"),
        "cor_t2": ("COR T2 FSE", "Cor T2"),
        "localizer": ("3-PLANE LOC", "3 Plane Localizer", "LOC"),
        "dwi": ("SAG DWI", "Sag DWI b800"),
        "dwi_axial": ("AX DWI", "Ax DWI b800"),
    },
    "philips": {
        "sag_t1": ("T1W_TSE_SAG", "sT1W_TSE", "T1W_TSE SAG"),
        "sag_t2": ("T2W_TSE_SAG", "sT2W_TSE", "T2W_TSE SAG"),
        "sag_stir": ("STIR_SAG", "sSTIR", "T2W_STIR SAG"),
        "sag_t2_fs": ("T2W_SPAIR_SAG", "sT2W_SPAIR", "T2W_mDIXON_W SAG"),
        "sag_t1_fs": ("T1W_SPIR_SAG", "sT1W_SPIR"),
        "sag_t1_post": ("T1W_TSE_SAG GD", "sT1W_SPIR +GD"),
        "ax_t2": ("T2W_TSE_TRA", "aT2W_TSE", "T2W_TSE AX"),
        "ax_t1": ("T1W_TSE_TRA",),
        "ax_t2_gre": ("T2*W_FFE_TRA", "aT2*W_mFFE"),
        "cor_t2": ("T2W_TSE_COR", "cT2W_TSE"),
        "localizer": ("Survey", "SURVEY", "sScout"),
        "dwi": ("DWI_SAG", "sDWI"),
        "dwi_axial": ("DWI_TRA", "aDWI"),
    },
    "canon": {
        "sag_t1": ("Sag T1 FSE", "T1 SAG", "sag T1"),
        "sag_t2": ("Sag T2 FSE", "T2 SAG", "sag T2"),
        "sag_stir": ("Sag STIR", "STIR SAG"),
        "sag_t2_fs": ("Sag T2 FatSat", "T2 FS SAG"),
        "sag_t1_fs": ("Sag T1 FatSat",),
        "sag_t1_post": ("Sag T1 +Gd", "T1 SAG POST"),
        "ax_t2": ("Ax T2 FSE", "T2 AX", "ax T2"),
        "ax_t1": ("Ax T1 FSE",),
        "ax_t2_gre": ("Ax T2* FE",),
        "cor_t2": ("Cor T2 FSE",),
        "localizer": ("Locator", "3-plane Locator"),
        "dwi": ("Sag DWI",),
        "dwi_axial": ("Ax DWI",),
    },
}

#: RSNA-2024-style descriptions (vendor-neutral, as in the competition data).
RSNA_DESCRIPTIONS: dict[str, str] = {
    "sag_t1": "Sagittal T1",
    "sag_stir": "Sagittal T2/STIR",
    "sag_t2_fs": "Sagittal T2/STIR",
    "sag_t2": "Sagittal T2",
    "ax_t2": "Axial T2",
}

_CT_KERNELS: dict[str, tuple[tuple[str, str], ...]] = {
    # (kernel, bone or soft)
    "siemens": (("Br64", "bone"), ("Bv40", "soft"), ("B70s", "bone"), ("Br40", "soft")),
    "ge": (("BONE", "bone"), ("STANDARD", "soft"), ("BONEPLUS", "bone")),
    "philips": (("YB", "bone"), ("B", "soft"), ("D", "bone")),
    "canon": (("FC30", "bone"), ("FC08", "soft"), ("FC81", "bone")),
}

_CT_DESCRIPTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "siemens": {
        "ct_axial": ("Spine 1.0 {k}", "Spine  2.0  {k}  3", "WS Spine {t}mm {k}"),
        "ct_sag_reformat": ("Spine Sag 2.0 {k}", "MPR Sag"),
        "ct_cor_reformat": ("Spine Cor 2.0 {k}", "MPR Cor"),
        "ct_scout": ("Topogram  0.6  T20f", "Topogram"),
    },
    "ge": {
        "ct_axial": ("{k} {t}mm", "Recon 2: SPINE {k}", "AXIAL SPINE"),
        "ct_sag_reformat": ("SAG {k}", "Sag Reformat"),
        "ct_cor_reformat": ("COR {k}", "Cor Reformat"),
        "ct_scout": ("Scout", "SCOUT"),
    },
    "philips": {
        "ct_axial": ("Spine Bone {t}mm", "Spine {k} {t}", "Axial Spine"),
        "ct_sag_reformat": ("Sag MPR Bone", "MPR Sag"),
        "ct_cor_reformat": ("Cor MPR Bone", "MPR Cor"),
        "ct_scout": ("Surview", "SURVIEW"),
    },
    "canon": {
        "ct_axial": ("Spine {t} {k}", "AXIAL {k}"),
        "ct_sag_reformat": ("Sag MPR {k}",),
        "ct_cor_reformat": ("Cor MPR {k}",),
        "ct_scout": ("Scanogram",),
    },
}


@dataclass(frozen=True)
class MRProtocol:
    """A sampled MR protocol: what the phantom renders and what the DICOM files say.

    Attributes:
        kind: series kind (``sag_t2``, ``dwi`` …).
        sequence: the contrast passed to ``SpinePhantom.render`` (same TR/TE/TI as the tags).
        description: the vendor's usual SeriesDescription for this protocol.
        tags: DICOM attributes by pydicom keyword (timing, sequence identification, ImageType, …).
    """

    kind: str
    sequence: MRSequence
    description: str
    tags: dict[str, Any]


@dataclass(frozen=True)
class CTProtocol:
    """A sampled CT protocol: rendering contrast, SeriesDescription and tags."""

    kind: str
    contrast: CTContrast
    description: str
    tags: dict[str, Any]
    bone_kernel: bool


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    """One of ``options`` drawn uniformly."""
    return str(options[int(rng.integers(len(options)))])


def _weighting(kind: str) -> str:
    """Map a kind to the sequence family whose timing it uses."""
    if kind in ("sag_t1", "ax_t1", "sag_t1_fs", "sag_t1_post"):
        return "t1"
    if kind in ("sag_t2", "ax_t2", "cor_t2"):
        return "t2"
    if kind in ("sag_stir", "sag_t2_fs", "ax_t2_gre", "localizer", "dwi"):
        return kind.replace("sag_", "").replace("ax_", "")
    raise ValueError(f"not an MR kind: {kind!r}")


def _timing(weighting: str, field_t: float, rng: np.random.Generator) -> dict[str, float]:
    """Sample TR/TE/TI/ETL/flip for a sequence family at a field strength (see module docstring)."""
    u = rng.uniform
    high = field_t >= 2.0
    if weighting == "t1":
        return {"tr": u(450, 900) if high else u(380, 800), "te": u(7, 18), "etl": rng.integers(2, 7), "flip": 90.0}
    if weighting == "t2":
        return {"tr": u(2500, 5200), "te": u(80, 125), "etl": rng.integers(13, 33), "flip": 90.0}
    if weighting == "stir":
        ti = u(170, 230) if high else u(135, 170)
        return {"tr": u(3000, 6500), "te": u(30, 70), "ti": ti, "etl": rng.integers(9, 25), "flip": 90.0}
    if weighting == "t2_fs":
        return {"tr": u(2500, 5000), "te": u(60, 100), "etl": rng.integers(12, 28), "flip": 90.0}
    if weighting == "t2_gre":
        return {"tr": u(400, 750), "te": u(8, 16) if high else u(12, 25), "etl": 1, "flip": u(20, 35)}
    if weighting == "localizer":
        return {"tr": u(5, 10), "te": u(1.5, 5), "etl": 1, "flip": u(20, 40)}
    if weighting == "dwi":
        return {"tr": u(3000, 6500), "te": u(55, 95), "etl": 1, "flip": 90.0}
    raise ValueError(weighting)


def _sequence_tags(vendor: str, weighting: str, fat_sat: bool, dixon: bool) -> dict[str, Any]:
    """ScanningSequence / SequenceVariant / ScanOptions / SequenceName as each vendor writes them."""
    scanning = {"t1": "SE", "t2": "SE", "t2_fs": "SE", "stir": ["SE", "IR"], "t2_gre": "GR", "localizer": "GR",
                "dwi": "EP"}[weighting]
    variant: list[str] | str = {"t2_gre": ["SP", "OSP"], "localizer": ["SP", "OSP"], "dwi": ["SK", "SP"]}.get(
        weighting, ["SK", "SP", "OSP"]
    )
    if weighting == "stir":
        variant = ["SK", "SP", "MP"]
    fast = weighting in ("t1", "t2", "t2_fs", "stir")
    options: list[str] = []
    if vendor == "ge":
        if fast:
            options.append("FAST_GEMS")
        if weighting == "stir":
            options.append("IR_GEMS")
        if weighting in ("localizer", "t2_gre"):
            options.append("FC")
        if weighting == "dwi":
            options.append("EPI_GEMS")
    elif vendor == "philips" and weighting == "dwi":
        options.append("FS")
    elif vendor == "siemens" and fast:
        options.append("PFP")
    if fat_sat and not dixon:
        options.append("SFS" if vendor == "philips" else "FS")
    names = {
        "siemens": {"t1": "*tse2d1_3", "t2": "*tse2d1_21", "t2_fs": "*tse2d1_17", "stir": "*tir2d1_13",
                    "t2_gre": "*me2d1r3", "localizer": "*fl2d1", "dwi": "*ep_b0"},
        "ge": {"t1": "fse-xl/90", "t2": "fse-xl/90", "t2_fs": "fse-xl/90", "stir": "fse-ir/90",
               "t2_gre": "merge/20", "localizer": "fgre/30", "dwi": "epi2/90"},
        "philips": {"t1": "TSE", "t2": "TSE", "t2_fs": "TSE", "stir": "IR_TSE", "t2_gre": "FFE",
                    "localizer": "FFE", "dwi": "DwiSE"},
        "canon": {"t1": "FSE2D", "t2": "FSE2D", "t2_fs": "FSE2D", "stir": "FSE2D_IR", "t2_gre": "FE2D",
                  "localizer": "FE2D", "dwi": "SE_EPI"},
    }
    if dixon:
        names = {**names, "siemens": {**names["siemens"], "t2_fs": "*tse2d2_17"}}
    tags: dict[str, Any] = {
        "ScanningSequence": scanning,
        "SequenceVariant": variant,
        "SequenceName": names[vendor][weighting],
    }
    # An empty multi-valued CS would be written as "" which some readers treat as missing; leave it out.
    if options:
        tags["ScanOptions"] = options
    return tags


def sample_mr_protocol(
    kind: str, vendor: Vendor, field_strength_t: float, rng: np.random.Generator, *, diffusion_b: float | None = None,
    axial: bool = False,
) -> MRProtocol:
    """Sample one MR protocol of ``kind`` on ``vendor``'s scanner at ``field_strength_t`` tesla.

    Args:
        kind: an MR series kind (see :mod:`training.synthetic.study`).
        vendor: one of :data:`VENDORS`.
        field_strength_t: 1.5 or 3.0.
        rng: random generator (the only source of randomness).
        diffusion_b: for ``dwi`` only, the b-value (s/mm²) of this image set.
        axial: for ``dwi`` only, an axial acquisition (picks an axial name; sagittal otherwise).

    Returns:
        The protocol; its ``sequence`` is what the phantom must render with.
    """
    weighting = _weighting(kind)
    timing = _timing(weighting, field_strength_t, rng)
    dixon = kind == "sag_t2_fs" and rng.random() < 0.3
    fat_sat = kind in ("sag_t2_fs", "sag_t1_fs") or (kind == "sag_t1_post" and rng.random() < 0.5)
    names = _DESCRIPTIONS[vendor.key]["dwi_axial" if kind == "dwi" and axial else kind]
    description = _pick(rng, names)
    if dixon and "dixon" not in description.lower() and "water" not in description.lower():
        description = f"{description} W"
    inversion = float(timing["ti"]) if "ti" in timing else None
    sequence = MRSequence(
        repetition_time_ms=round(float(timing["tr"]), 1),
        echo_time_ms=round(float(timing["te"]), 2),
        inversion_time_ms=round(inversion, 1) if inversion is not None else None,
        fat_suppressed=fat_sat,
        field_strength_t=field_strength_t,
        gradient_echo=weighting in ("t2_gre", "localizer"),
        diffusion_b=diffusion_b if kind == "dwi" else None,
        flip_angle_deg=round(float(timing["flip"]), 1) if weighting in ("t2_gre", "localizer") else None,
    )
    image_type = list(vendor.mr_image_type)
    if kind == "localizer":
        image_type = ["ORIGINAL", "PRIMARY", "LOCALIZER"] + ([] if vendor.key == "ge" else ["M"])
    elif kind == "dwi":
        image_type = ["ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW" if (diffusion_b or 0) > 0 else "NONE"]
    elif dixon:
        image_type = ["ORIGINAL", "PRIMARY", "DIXON", "WATER"]
    models = vendor.mr_models_3t if field_strength_t >= 2.0 else vendor.mr_models_15t
    tags: dict[str, Any] = {
        "Manufacturer": vendor.manufacturer,
        "ManufacturerModelName": _pick(rng, models),
        "MagneticFieldStrength": field_strength_t,
        "ImagingFrequency": round(_GAMMA_MHZ_PER_T * field_strength_t, 6),
        "ImagedNucleus": "1H",
        "RepetitionTime": sequence.repetition_time_ms,
        "EchoTime": sequence.echo_time_ms,
        "EchoTrainLength": int(timing["etl"]),
        "EchoNumbers": 1,
        "FlipAngle": round(float(timing["flip"]), 1),
        "NumberOfAverages": float(rng.choice([1.0, 1.0, 2.0])) if kind != "localizer" else 1.0,
        "MRAcquisitionType": "2D",
        "ImageType": image_type,
        "ProtocolName": names[0],
        **_sequence_tags(vendor.key, weighting, fat_sat, dixon),
    }
    if inversion is not None:
        tags["InversionTime"] = sequence.inversion_time_ms
    if kind == "sag_t1_post":
        tags["ContrastBolusAgent"] = _pick(rng, ["Gadovist", "GADOBUTROL", "Dotarem", "Gd-DOTA", "ProHance 15ml"])
        tags["ContrastBolusRoute"] = "IV"
    if kind == "dwi":
        tags["DiffusionBValue"] = float(diffusion_b or 0.0)
    return MRProtocol(kind=kind, sequence=sequence, description=description, tags=tags)


#: Iodinated agents written to ContrastBolusAgent of a contrast-enhanced CT.
CT_CONTRAST_AGENTS: tuple[str, ...] = ("Omnipaque 350", "IOMERON 400", "Visipaque 320", "Ultravist 370", "IOPAMIDOL")


def sample_ct_protocol(
    kind: str, vendor: Vendor, rng: np.random.Generator, *, slice_thickness_mm: float, bone_kernel: bool | None = None,
    iv_contrast: float = 0.0, contrast_agent: str = "",
) -> CTProtocol:
    """Sample a CT protocol (``ct_axial``, ``ct_sag_reformat``, ``ct_cor_reformat`` or ``ct_scout``).

    ImageType follows the selection rules: axial ORIGINAL\\PRIMARY\\AXIAL, reformats
    DERIVED\\SECONDARY\\REFORMATTED (Siemens MPR), scouts ORIGINAL\\PRIMARY\\LOCALIZER.
    ``iv_contrast`` > 0 renders a contrast-enhanced CT of that strength
    (:class:`~training.synthetic.phantom.CTContrast`) and records ``contrast_agent`` in
    ContrastBolusAgent with ContrastBolusRoute IV; it draws nothing from ``rng``.
    """
    kvp = float(rng.choice([100.0, 120.0, 120.0, 140.0]))
    kernels = _CT_KERNELS[vendor.key]
    if bone_kernel is None:
        bone_kernel = rng.random() < 0.7
    kernel = _pick(rng, [k for k, use in kernels if (use == "bone") == bone_kernel])
    template = _pick(rng, _CT_DESCRIPTIONS[vendor.key][kind])
    description = template.format(k=kernel, t=f"{slice_thickness_mm:g}")
    image_type = {
        "ct_axial": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "ct_sag_reformat": ["DERIVED", "SECONDARY", "REFORMATTED", "MPR"],
        "ct_cor_reformat": ["DERIVED", "SECONDARY", "REFORMATTED", "MPR"],
        "ct_scout": ["ORIGINAL", "PRIMARY", "LOCALIZER"],
    }[kind]
    window = (500.0, 2000.0) if bone_kernel else (40.0, 400.0)
    tags: dict[str, Any] = {
        "Manufacturer": vendor.manufacturer,
        "ManufacturerModelName": _pick(rng, vendor.ct_models),
        "KVP": kvp,
        "XRayTubeCurrent": int(rng.integers(120, 450)),
        "ConvolutionKernel": kernel,
        "ImageType": image_type,
        "WindowCenter": window[0],
        "WindowWidth": window[1],
        "ProtocolName": "Spine",
    }
    if iv_contrast > 0:
        tags["ContrastBolusAgent"] = contrast_agent
        tags["ContrastBolusRoute"] = "IV"
    return CTProtocol(kind=kind, contrast=CTContrast(kvp=kvp, iv_contrast=iv_contrast), description=description, tags=tags,
                      bone_kernel=bone_kernel)


def vendor_station(vendor: Vendor, rng: np.random.Generator) -> str:
    """A StationName typical of the vendor."""
    return _pick(rng, vendor.station_names)
