"""Series selector: which series of a study each stage uses, decided from DICOM tags.

:func:`assign_roles` gives every :class:`~operators.core.dicom_io.DicomSeries` one of :data:`ROLES`
and a short reason a radiographer can read ("sagittal TSE, TR 650 ms, TE 12 ms: T1-weighted").

Rules (the brief's, in this order)
----------------------------------
1. No stack with usable geometry → ``unused`` (cannot be localised). Modalities other than MR/CT
   → ``unused``.
2. Localisers/scouts: ImageType contains LOCALIZER, or stacks in ≥ 2 planes with ≤ 5 slices each.
3. Diffusion (MR): DiffusionBValue > 0 (standard tag, or Siemens/GE private b-value), ImageType
   DIFFUSION/ADC/TRACE(W)/EADC/FA, or a Siemens diffusion SequenceName (``*ep_b1000t``).
   Subtractions, MIPs and projections → ``unused``.
4. CT: axial + ImageType ORIGINAL (not SECONDARY/REFORMATTED/MPR) → ``ct_axial``; sagittal or
   coronal, DERIVED or SECONDARY → ``unused`` (reformat).
5. MR weighting from ScanningSequence/SequenceVariant/ScanOptions/SequenceName and TR/TE/TI with
   field-strength-aware thresholds (:data:`THRESHOLDS`):

   * sequence family: ``EP`` → echo planar; ``GR`` without ``SE`` → gradient echo (Siemens
     ``*fl``/``*me2d``/``*tfi``/``*de``, Philips FFE, GE GRE/MERGE); ``SE`` or ``IR`` alone → spin
     echo (Philips records STIR as ``IR``; GE adds ``FAST_GEMS`` for FSE); without
     ScanningSequence, the Siemens SequenceName (``*tse``, ``*tir`` = TIRM/STIR, ``*h2d``, ``*spc``)
     and then FlipAngle (< 60° → gradient echo) decide.
   * inversion: ``IR`` in ScanningSequence/ScanOptions (GE ``IR_GEMS``), a ``*tir`` sequence or
     InversionTime > 0; short TI → STIR (TIRM is STIR); intermediate TI with short TE → T1-FLAIR
     (T1-weighted, ranked below a plain T1 SE/TSE); long TI with long TE → T2-FLAIR (unused).
   * fat suppression: ScanOptions FS/SFS/FAT_SAT/SPIR/SPAIR/CHESS, or a Dixon WATER image.
   * contrast: a non-empty ContrastBolusAgent.
   * spin echo without inversion: TR ≤ T1 max and TE ≤ 30 ms → T1 (fat-sat or post-contrast T1 →
     unused); TR ≥ 1500 ms and TE ≥ 60 ms → T2 (fat-sat T2 → a ``sag_stir`` candidate ranked
     below a true STIR); long TR with short TE → proton density (unused).
   * gradient echo with TE ≥ T2* min and flip ≤ 45° → T2* (an ``ax_t2`` candidate ranked below
     TSE); other gradient echo → unused.

   When TR/TE (or the TI of an inversion sequence) are missing, or the tags contradict each other
   (TE ≥ TR, short TR with long TE) or fall between the T1 and T2 ranges, the SeriesDescription is
   used as a hint; such decisions rank below tag-based ones and carry a ``ROLE_FROM_DESCRIPTION``
   warning. The same holds where the one deciding tag is absent: without ContrastBolusAgent a
   post-contrast T1 has the plain T1's TR/TE, so a description saying post-contrast (``+C``, ``GD``,
   ``KM``, ``post``) makes it ``unused``; without ScanOptions, a description saying fat-sat makes a
   T1 ``unused`` and a T2 a ``sag_stir`` candidate. When the tags decide, a disagreeing description
   is only mentioned in the reason.
6. Plane from the slice normal of the largest stack: sagittal → ``sag_t1``/``sag_t2``/``sag_stir``
   (needs ≥ 3 slices), axial → ``ax_t2``, coronal → ``unused``.
7. Several candidates for one role: candidates whose cranio-caudal ranges overlap by less than
   50 % of the shorter are all kept (stations). Among overlapping ones, in order: sequence rank
   (STIR > fat-sat T2; TSE T2 > fat-sat T2 > T2* GRE; T1 SE/TSE > T1-FLAIR; tags > description),
   ORIGINAL over DERIVED, more spine covered (slices × cranio-caudal coverage, 5 % tolerance),
   finer in-plane resolution (5 % tolerance), then the higher SeriesNumber. Each loser's reason
   names the series it lost to (by SeriesNumber and description) and why.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from operators.core.dicom_io import AcquisitionTags, DicomSeries, ImageStack, LoadedStack, SeriesReadError, StudyScan
from operators.core.geometry import Plane, VolumeGeometry
from operators.core.study_warning import StudyWarning

#: Every role a series can get. The one home of this list.
ROLES: tuple[str, ...] = ("sag_t1", "sag_t2", "sag_stir", "ax_t2", "ct_axial", "unused")

#: Sagittal roles need at least this many slices in the sagittal stack.
MIN_SAGITTAL_SLICES = 3
#: Candidates overlapping by less than this fraction of the shorter range are separate stations.
STATION_OVERLAP = 0.5
#: Relative difference below which coverage or resolution count as equal when ranking.
RANK_TOLERANCE = 0.05
#: A series with stacks in several planes, none larger than this, is a localiser.
LOCALISER_MAX_SLICES = 5


@dataclass(frozen=True)
class WeightingThresholds:
    """TR/TE/TI limits (ms) that separate weightings at one field strength.

    T1 relaxation lengthens with field strength, so a T1-weighted TR may be longer at 3 T and the
    fat-nulling TI of STIR is longer (≈ 150 ms at 1.5 T, ≈ 220 ms at 3 T); T2* shortens, so
    T2*-weighted gradient echoes use shorter TE at 3 T.
    """

    label: str
    t1_max_tr_ms: float
    t1_max_te_ms: float
    t2_min_tr_ms: float
    t2_min_te_ms: float
    stir_ti_ms: tuple[float, float]
    t1_flair_ti_ms: tuple[float, float]
    t2_flair_min_ti_ms: float
    t2star_min_te_ms: float
    gre_max_flip_deg: float


THRESHOLDS: dict[str, WeightingThresholds] = {
    "1.5T": WeightingThresholds("1.5 T", 1000.0, 30.0, 1500.0, 60.0, (70.0, 250.0), (450.0, 1100.0), 1500.0, 10.0, 45.0),
    "3T": WeightingThresholds("3 T", 1200.0, 30.0, 1500.0, 60.0, (90.0, 320.0), (550.0, 1400.0), 1500.0, 7.0, 45.0),
    # Field strength not recorded: the union of both, so that neither field's protocols fall out.
    "unknown": WeightingThresholds("unknown field", 1200.0, 30.0, 1500.0, 60.0, (70.0, 320.0), (450.0, 1400.0), 1500.0, 7.0, 45.0),
}


def thresholds_for(field_strength_t: float | None) -> WeightingThresholds:
    """Thresholds for a MagneticFieldStrength in tesla (≤ 2 T: the 1.5 T set; > 2 T: 3 T).

    Some old scanners record gauss (15000 for 1.5 T); values > 100 are converted.
    """
    if field_strength_t is None or field_strength_t <= 0:
        return THRESHOLDS["unknown"]
    tesla = field_strength_t / 10000.0 if field_strength_t > 100 else field_strength_t
    return THRESHOLDS["1.5T"] if tesla <= 2.0 else THRESHOLDS["3T"]


@dataclass(frozen=True)
class SeriesDecision:
    """The selector's verdict on one series.

    Attributes:
        series_instance_uid: the series.
        role: one of :data:`ROLES`.
        reason: one short sentence (no patient data) saying why.
        candidate_role: the role the series qualified for when it is ``unused`` because another
            series was preferred (``None`` otherwise).
        stack_indices: stacks of ``DicomSeries.stacks`` the role uses, largest first (empty for
            ``unused`` series without a usable stack).
        description_hint: the role rests on SeriesDescription because tags were missing or
            contradictory; ``warnings`` then holds a ``ROLE_FROM_DESCRIPTION`` warning.
        warnings: warnings the report should carry for this decision.
    """

    series_instance_uid: str
    role: str
    reason: str
    candidate_role: str | None = None
    stack_indices: tuple[int, ...] = ()
    description_hint: bool = False
    warnings: tuple[StudyWarning, ...] = ()


# ------------------------------------------------------------------------------------------------
# Sequence analysis
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Weighting:
    """What a sequence is: ``kind`` (t1, t1_flair, t2, t2_fs, stir, t2star, t1_fs, pd, gre, epi,
    t2_flair, ir, dixon, or unclear), a sentence saying so, and whether the description decided."""

    kind: str
    sentence: str
    from_description: bool = False


#: (plane, sequence kind) → (role, rank within the role (lower is preferred), label for reasons).
#: Every other combination is unused.
_ROLE_TABLE: dict[tuple[str, str], tuple[str, int, str]] = {
    ("sagittal", "t1"): ("sag_t1", 0, "T1 SE/TSE"),
    ("sagittal", "t1_flair"): ("sag_t1", 1, "T1-FLAIR"),
    ("sagittal", "t2"): ("sag_t2", 0, "T2 SE/TSE"),
    ("sagittal", "stir"): ("sag_stir", 0, "STIR"),
    ("sagittal", "t2_fs"): ("sag_stir", 1, "fat-saturated T2"),
    ("axial", "t2"): ("ax_t2", 0, "T2 SE/TSE"),
    ("axial", "t2_fs"): ("ax_t2", 1, "fat-saturated T2"),
    ("axial", "t2star"): ("ax_t2", 2, "T2* gradient echo"),
}
_DESCRIPTION_RANK_PENALTY = 10

_FAT_SAT_OPTIONS = frozenset({"FS", "SFS", "FAT_SAT", "FATSAT", "FSAT", "SPIR", "SPAIR", "CHESS", "FS_GEMS", "FAT SAT"})
_DIFFUSION_IMAGE_TYPES = frozenset({"DIFFUSION", "ADC", "TRACEW", "TRACE", "EADC", "FA", "DWI", "ISODWI", "CALC_BVALUE"})
_PROJECTION_IMAGE_TYPES = frozenset({"MIP", "MINIP", "PROJECTION IMAGE", "SUBTRACTION", "SUB", "SUBTRACT", "MNIP"})
_REFORMAT_IMAGE_TYPES = frozenset({"REFORMATTED", "MPR", "CURVED", "CPR", "VOLUME"})
_NO_CONTRAST = frozenset({"", "NONE", "NO", "N/A", "NA", "0", "-"})


def _ms(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _sequence_family(tags: AcquisitionTags) -> tuple[str | None, str]:
    """``("SE"|"GR"|"EP"|None, label)`` from ScanningSequence, then SequenceName, then FlipAngle."""
    codes = set(tags.scanning_sequence)
    name = tags.sequence_name.lower().lstrip("*_ ")
    # Turbo/fast spin echo: an echo train, GE's FAST_GEMS option, or segmented k-space (SK).
    fast = bool(tags.echo_train_length and tags.echo_train_length > 1) or "FAST_GEMS" in tags.scan_options or (
        "SK" in tags.sequence_variant
    )
    if "EP" in codes or re.match(r"(ep|epi|epse|re_|resolve)", name):
        return "EP", "EPI"
    if "GR" in codes and "SE" not in codes:
        return "GR", "gradient echo"
    if "SE" in codes or codes == {"IR"}:
        if "IR" in codes or re.match(r"(tir|stir)", name):
            return "SE", "IR-TSE" if fast else "IR spin echo"
        return "SE", "TSE" if fast else "spin echo"
    if re.match(r"(tir|stir)", name):
        return "SE", "IR-TSE"
    if re.match(r"(tse|fse|frfse|se|h2d|haste|spc|space|blade)", name):
        return "SE", "TSE" if not name.startswith("se") else "spin echo"
    if re.match(r"(fl|fi|me|de|tfi|gre|ffe|tfl|medic|merge|swi)", name):
        return "GR", "gradient echo"
    if tags.flip_angle_deg is not None:
        return ("GR", "gradient echo") if tags.flip_angle_deg < 60 else ("SE", "spin echo")
    return None, "(sequence type not recorded)"


def _has_inversion(tags: AcquisitionTags) -> bool:
    name = tags.sequence_name.lower().lstrip("*_ ")
    return (
        "IR" in tags.scanning_sequence
        or any(option in ("IR", "IR_GEMS") for option in tags.scan_options)
        or bool(re.match(r"(tir|stir)", name))
        or (tags.inversion_time_ms is not None and tags.inversion_time_ms > 0)
    )


def _fat_suppressed(tags: AcquisitionTags) -> bool:
    return bool(_FAT_SAT_OPTIONS.intersection(tags.scan_options)) or "WATER" in tags.image_type


def records_contrast(tags: AcquisitionTags) -> bool:
    """Whether the series records an administered contrast agent (a non-empty ContrastBolusAgent
    that is not a "none" spelling)."""
    return tags.contrast_bolus_agent.strip().upper() not in _NO_CONTRAST


def _is_diffusion(tags: AcquisitionTags) -> bool:
    return (
        (tags.diffusion_b_value is not None and tags.diffusion_b_value > 0)
        or bool(_DIFFUSION_IMAGE_TYPES.intersection(tags.image_type))
        or bool(re.match(r"\*?(ep|re|epse)_?b\d", tags.sequence_name.lower()))
    )


def _weighting_from_tags(tags: AcquisitionTags, plane: str) -> _Weighting:
    """Classify an MR sequence from its tags; ``kind == "unclear"`` when tags cannot decide."""
    limits = thresholds_for(tags.magnetic_field_strength_t)
    family, family_label = _sequence_family(tags)
    tr, te, ti = tags.repetition_time_ms, tags.echo_time_ms, tags.inversion_time_ms
    inversion = _has_inversion(tags)
    fat_sat = _fat_suppressed(tags)
    contrast = records_contrast(tags)
    parts = [f"{plane} {family_label}"]
    parts += [f"TR {_ms(tr)} ms"] if tr is not None else []
    parts += [f"TE {_ms(te)} ms"] if te is not None else []
    parts += [f"TI {_ms(ti)} ms"] if inversion and ti is not None else []
    parts += ["fat-saturated"] if fat_sat and "WATER" not in tags.image_type else []
    parts += ["Dixon water image"] if "WATER" in tags.image_type else []
    parts += ["contrast given"] if contrast else []
    parts += [limits.label] if tags.magnetic_field_strength_t else []
    stem = ", ".join(parts)

    def verdict(kind: str, words: str) -> _Weighting:
        return _Weighting(kind, f"{stem}: {words}")

    image_type = set(tags.image_type)
    if "DIXON" in image_type and "FAT" in image_type and "WATER" not in image_type:
        return verdict("dixon", "Dixon fat-only image")
    if image_type.intersection({"OPP_PHASE", "OUT_PHASE", "OPPOSED_PHASE"}):
        return verdict("dixon", "Dixon opposed-phase image")
    if family == "EP":
        return verdict("epi", "echo-planar sequence")
    if te is None or (tr is None and family != "GR"):
        return verdict("unclear", "weighting tags missing")
    if tr is not None and te >= tr:
        return verdict("unclear", "TE is not shorter than TR (contradictory tags)")
    if family == "GR":
        flip_ok = tags.flip_angle_deg is None or tags.flip_angle_deg <= limits.gre_max_flip_deg
        if te >= limits.t2star_min_te_ms and flip_ok:
            return verdict("t2star", "T2*-weighted gradient echo")
        return verdict("gre", "gradient echo (not T2*-weighted)")
    if inversion:
        if ti is None:
            return verdict("unclear", "inversion recovery without InversionTime")
        if limits.stir_ti_ms[0] <= ti <= limits.stir_ti_ms[1]:
            return verdict("stir", "STIR (short-TI inversion recovery)")
        if limits.t1_flair_ti_ms[0] <= ti <= limits.t1_flair_ti_ms[1] and te <= limits.t1_max_te_ms:
            return verdict("t1_flair", "T1-FLAIR (T1-weighted inversion recovery)")
        if ti >= limits.t2_flair_min_ti_ms and te >= limits.t2_min_te_ms:
            return verdict("t2_flair", "T2-FLAIR (fluid-suppressed)")
        return verdict("ir", "inversion recovery with a TI that is neither STIR nor FLAIR")
    assert tr is not None
    if tr <= limits.t1_max_tr_ms and te <= limits.t1_max_te_ms:
        if fat_sat:
            return verdict("t1_fs", "fat-saturated T1 (usually post-contrast)")
        if contrast:
            return verdict("t1_post", "post-contrast T1")
        return verdict("t1", "T1-weighted")
    if tr >= limits.t2_min_tr_ms and te >= limits.t2_min_te_ms:
        return verdict("t2_fs", "fat-saturated T2 (fluid-sensitive)") if fat_sat else verdict("t2", "T2-weighted")
    if tr >= limits.t2_min_tr_ms and te <= limits.t1_max_te_ms:
        return verdict("pd", "proton-density-weighted")
    if tr <= limits.t1_max_tr_ms and te >= limits.t2_min_te_ms:
        return verdict("unclear", "short TR with long TE (contradictory tags)")
    return verdict("unclear", "TR/TE between the T1 and T2 ranges")


#: Description hints, checked in order (first match wins). Only used when tags cannot decide.
_DESCRIPTION_HINTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE))
    for kind, pattern in (
        ("localiser", r"\bloc(ali[sz]er|ator)?\b|scout|survey|surview|topogram|scanogram|3.?pl(ane)?\b|tri.?pilot"),
        ("diffusion", r"dwi|diff|\badc\b|trace|ep2d|\bb\d{3,4}\b"),
        ("stir", r"stir|tirm|\btir\b|t2.?ir\b|\bir\b"),
        ("t2star", r"t2\*|t2star|medic|merge|me2d|\bm?ffe\b|\bgre\b|\bfe\b|hemo"),
        ("t2_flair", r"t2.?flair|\bflair\b"),
        ("t1_flair", r"t1.?flair"),
        ("t2_fs", r"t2.*(\bfs\b|_fs|fat.?sat|fatsat|spair|spir|water|\bw\b|_w\b)"),
        ("t1_post", r"t1.*(\+c|\+gd|post|\bgd\b|gad|\bkm\b|_km|contrast)|(post|\+c|gad).*t1"),
        ("t1_fs", r"t1.*(\bfs\b|_fs|fat.?sat|fatsat|spir|spair)"),
        ("pd", r"\bpd\b|_pd|proton"),
        ("t1", r"t1(?!\d)"),
        ("t2", r"t2(?!\d)"),
    )
)
_HINT_WORDS = {
    "localiser": "a localiser", "diffusion": "diffusion", "stir": "STIR", "t2star": "T2* gradient echo",
    "t2_flair": "T2-FLAIR", "t1_flair": "T1-FLAIR", "t2_fs": "fat-saturated T2", "t1_post": "post-contrast T1",
    "t1_fs": "fat-saturated T1", "pd": "proton density", "t1": "T1", "t2": "T2",
}


def _description_hint(description: str) -> str | None:
    text = description.replace("_", " ")
    for kind, pattern in _DESCRIPTION_HINTS:
        if pattern.search(text) or pattern.search(description):
            return kind
    return None


def _description_plane(description: str) -> str | None:
    """The plane a description names (``sag…``, ``ax…``/``tra…``, ``cor…`` words), if any."""
    for word in re.split(r"[^a-z0-9]+", description.lower()):
        for plane, prefixes in (("sagittal", ("sag",)), ("axial", ("ax", "tra")), ("coronal", ("cor",))):
            if word.startswith(prefixes):
                return plane
    return None


#: Hint kinds and the tag-based kinds they agree with (for the "description disagrees" note).
_HINT_AGREES: dict[str, frozenset[str]] = {
    "localiser": frozenset(), "diffusion": frozenset({"epi"}), "stir": frozenset({"stir"}),
    "t2star": frozenset({"t2star", "gre"}), "t2_flair": frozenset({"t2_flair"}), "t1_flair": frozenset({"t1_flair"}),
    "t2_fs": frozenset({"t2_fs", "stir"}), "t1_post": frozenset({"t1_post", "t1_fs"}), "t1_fs": frozenset({"t1_fs", "t1_post"}),
    "pd": frozenset({"pd"}), "t1": frozenset({"t1", "t1_flair", "t1_fs", "t1_post"}), "t2": frozenset({"t2", "t2_fs"}),
}


def _refine_with_missing_tags(weighting: _Weighting, tags: AcquisitionTags, hint: str | None, description: str) -> _Weighting:
    """Use the description where the deciding tag is simply absent: contrast is invisible without
    ContrastBolusAgent (a post-contrast T1 has the same TR/TE as the plain one), and fat
    suppression without ScanOptions. The result is flagged as description-based."""
    refined = {
        ("t1", "t1_post"): not tags.contrast_bolus_agent,
        ("t1", "t1_fs"): not tags.scan_options,
        ("t2", "t2_fs"): not tags.scan_options,
    }.get((weighting.kind, hint or ""), False)
    if not refined:
        return weighting
    missing = "ContrastBolusAgent" if hint == "t1_post" else "ScanOptions"
    sentence = f'{weighting.sentence}; {missing} missing and description "{description}" says {_HINT_WORDS[hint]}'  # type: ignore[index]
    return _Weighting(hint, sentence, from_description=True)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Candidates
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Candidate:
    series: DicomSeries
    role: str
    rank: int
    kind_label: str
    sentence: str
    stacks: tuple[ImageStack, ...]
    from_description: bool
    z_range: tuple[float, float]
    n_slices: int
    resolution_mm: float

    @property
    def derived(self) -> bool:
        return bool(self.series.tags.image_type) and self.series.tags.image_type[0] == "DERIVED"

    @property
    def coverage_mm(self) -> float:
        return self.z_range[1] - self.z_range[0]

    @property
    def coverage_score(self) -> float:
        return self.n_slices * max(self.coverage_mm, 1.0)


def cranio_caudal_range(geometries: Sequence[VolumeGeometry]) -> tuple[float, float]:
    """Cranio-caudal (LPS z, mm) range a series covers, as used for stations and coverage.

    For sagittal/coronal volumes: the z extent of the field of view (outer pixel edges) at the
    middle slice; for axial volumes: the slice centres ± half a step, so that an angled axial slab
    does not count its tilt across the field of view as spine coverage.

    Args:
        geometries: the geometry of each stack of the series (at least one).

    Returns:
        ``(lowest z, highest z)`` over all stacks.
    """
    lows, highs = [], []
    for geometry in geometries:
        s, r, c = geometry.shape
        if geometry.plane == "axial":
            centres = geometry.index_to_lps(np.stack([np.arange(s), np.full(s, (r - 1) / 2), np.full(s, (c - 1) / 2)], axis=1))
            half = abs(float(geometry.affine[2, 0])) / 2
            lows.append(float(centres[:, 2].min()) - half)
            highs.append(float(centres[:, 2].max()) + half)
        else:  # the field of view: outer edges of the corner pixels
            mid = (s - 1) / 2
            corners = geometry.index_to_lps([[mid, -0.5, -0.5], [mid, r - 0.5, -0.5], [mid, -0.5, c - 0.5], [mid, r - 0.5, c - 0.5]])
            lows.append(float(corners[:, 2].min()))
            highs.append(float(corners[:, 2].max()))
    return min(lows), max(highs)


def overlap_fraction(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Overlap of two ``(low, high)`` intervals as a fraction of the shorter one (shorter than 1 mm counts as 1 mm)."""
    overlap = min(a[1], b[1]) - max(a[0], b[0])
    shorter = max(min(a[1] - a[0], b[1] - b[0]), 1.0)
    return max(overlap, 0.0) / shorter


def _differs(a: float, b: float) -> bool:
    return abs(a - b) > RANK_TOLERANCE * max(abs(a), abs(b))


def _compare(a: _Candidate, b: _Candidate) -> tuple[int, str]:
    """``(-1, why)`` when ``a`` is preferred, ``(1, why)`` when ``b`` is; why is said of the winner."""
    def result(a_wins: bool, why: str) -> tuple[int, str]:
        return (-1 if a_wins else 1), why

    if a.rank != b.rank:
        winner, loser = (a, b) if a.rank < b.rank else (b, a)
        if winner.from_description != loser.from_description and winner.kind_label == loser.kind_label:
            why = "its role is decided by tags, not by the description"
        else:
            why = f"{winner.kind_label} ranks above {loser.kind_label}"
        return result(a.rank < b.rank, why)
    if a.derived != b.derived:
        return result(not a.derived, "ORIGINAL images are preferred to DERIVED ones")
    if _differs(a.coverage_score, b.coverage_score):
        winner, loser = (a, b) if a.coverage_score > b.coverage_score else (b, a)
        return result(
            winner is a,
            f"it covers more of the spine ({winner.n_slices} slices × {winner.coverage_mm:.0f} mm vs "
            f"{loser.n_slices} × {loser.coverage_mm:.0f} mm)",
        )
    if _differs(a.resolution_mm, b.resolution_mm):
        winner, loser = (a, b) if a.resolution_mm < b.resolution_mm else (b, a)
        return result(
            winner is a,
            f"finer in-plane resolution ({winner.resolution_mm:.2f} mm vs {loser.resolution_mm:.2f} mm)",
        )
    a_number, b_number = a.series.series_number or 0, b.series.series_number or 0
    if a_number != b_number:
        return result(
            a_number > b_number,
            "same coverage and resolution, and the later series is preferred (a repeat usually replaces "
            "a degraded first acquisition)",
        )
    return result(
        a.series.series_instance_uid <= b.series.series_instance_uid,
        "equal in every respect; kept the first by SeriesInstanceUID",
    )


# ------------------------------------------------------------------------------------------------
# Deciding one series
# ------------------------------------------------------------------------------------------------
def _geometry_stacks(series: DicomSeries) -> list[ImageStack]:
    return sorted((s for s in series.stacks if s.geometry is not None), key=lambda s: (-s.n_slices, s.index))


def _unused(series: DicomSeries, reason: str, stacks: Sequence[ImageStack] = (), hint: bool = False) -> SeriesDecision:
    return SeriesDecision(
        series.series_instance_uid,
        "unused",
        reason,
        stack_indices=tuple(s.index for s in stacks),
        description_hint=hint,
        warnings=_hint_warnings(series, reason) if hint else (),
    )


def _hint_warnings(series: DicomSeries, reason: str) -> tuple[StudyWarning, ...]:
    return (
        StudyWarning(
            "ROLE_FROM_DESCRIPTION",
            f"{series.label()}: tags could not decide the sequence; the role rests on the series description ({reason}).",
            series.series_instance_uid,
        ),
    )


def _classify(series: DicomSeries) -> SeriesDecision | _Candidate:
    """A final decision (unused) or a candidate for a role, for one series on its own."""
    tags = series.tags
    stacks = _geometry_stacks(series)
    if series.modality not in ("MR", "CT"):
        return _unused(series, f"modality {series.modality or 'not recorded'} is not analysed")
    if not stacks:
        return _unused(series, "no stack with usable geometry (orientation/position/spacing tags missing or invalid)")
    if "LOCALIZER" in tags.image_type:
        return _unused(series, "localiser/scout (ImageType LOCALIZER)", stacks)
    planes = series.planes
    if len(planes) > 1 and stacks[0].n_slices <= LOCALISER_MAX_SLICES:
        return _unused(series, f"localiser: {len(stacks)} small stacks in {', '.join(planes)} planes", stacks)
    plane: Plane = stacks[0].plane  # type: ignore[assignment]
    plane_stacks = tuple(s for s in stacks if s.plane == plane)
    mixed = f" (largest of stacks in {', '.join(planes)} planes)" if len(planes) > 1 else ""

    if series.modality == "CT":
        return _classify_ct(series, plane, plane_stacks, mixed)

    if _is_diffusion(tags):
        b = f", b = {tags.diffusion_b_value:.0f} s/mm²" if tags.diffusion_b_value else ""
        return _unused(series, f"{plane} diffusion-weighted series{b}", plane_stacks)
    projection = _PROJECTION_IMAGE_TYPES.intersection(tags.image_type)
    if projection:
        return _unused(series, f"{plane} {sorted(projection)[0].lower()} image (derived), not a source series", plane_stacks)

    weighting = _weighting_from_tags(tags, plane)
    hint = _description_hint(series.description)
    notes = []
    if weighting.kind == "unclear":
        if hint is None:
            return _unused(series, f"{weighting.sentence}; the description gives no hint either", plane_stacks)
        sentence = f'{weighting.sentence}; description "{series.description}" suggests {_HINT_WORDS[hint]}'
        if hint in ("localiser", "diffusion"):
            return _unused(series, sentence, plane_stacks, hint=True)
        weighting = _Weighting(hint, sentence, from_description=True)
    else:
        weighting = _refine_with_missing_tags(weighting, tags, hint, series.description)
        if hint is not None and not weighting.from_description and weighting.kind not in _HINT_AGREES[hint]:
            notes.append(f"says {_HINT_WORDS[hint]}; tags decide")
        described_plane = _description_plane(series.description)
        if described_plane is not None and described_plane != plane:
            notes.append(f"says {described_plane}; the geometry decides")
    note = f' (description "{series.description}" {" and ".join(notes)})' if notes else ""

    reason = weighting.sentence + mixed + note
    role, rank, label = _ROLE_TABLE.get((plane, weighting.kind), (None, 0, ""))
    if role is None:
        why = "coronal series are not used" if plane == "coronal" else f"not used for the {plane} roles"
        return _unused(series, f"{reason}; {why}", plane_stacks, hint=weighting.from_description)
    if role.startswith("sag_") and stacks[0].n_slices < MIN_SAGITTAL_SLICES:
        return _unused(
            series, f"{reason}; only {stacks[0].n_slices} sagittal slice(s), {MIN_SAGITTAL_SLICES} needed",
            plane_stacks, hint=weighting.from_description,
        )
    return _candidate(series, role, rank, label, reason, plane_stacks, weighting.from_description)


def _classify_ct(series: DicomSeries, plane: Plane, plane_stacks: tuple[ImageStack, ...], mixed: str) -> SeriesDecision | _Candidate:
    image_type = series.tags.image_type
    if plane != "axial":
        return _unused(series, f"CT {plane} reformat{mixed}", plane_stacks)
    if image_type:
        derived = image_type[0] == "DERIVED" or (len(image_type) > 1 and image_type[1] == "SECONDARY")
        reformat = _REFORMAT_IMAGE_TYPES.union(_PROJECTION_IMAGE_TYPES).intersection(image_type)
        if derived or reformat:
            kind = "/".join(image_type[:2])
            return _unused(series, f"CT axial {kind} image{' (' + sorted(reformat)[0] + ')' if reformat else ''}: a reformat, not the source volume", plane_stacks)
        return _candidate(series, "ct_axial", 0, "ORIGINAL CT axial", f"CT axial ORIGINAL, {plane_stacks[0].n_slices} slices{mixed}", plane_stacks, False)
    if re.search(r"mpr|reformat|\bmip\b|sag|cor", series.description, re.IGNORECASE):
        return _unused(series, f'CT axial without ImageType; description "{series.description}" suggests a reformat', plane_stacks, hint=True)
    return _candidate(
        series, "ct_axial", _DESCRIPTION_RANK_PENALTY, "CT axial (ImageType missing)",
        f"CT axial, ImageType missing (assumed ORIGINAL), {plane_stacks[0].n_slices} slices{mixed}", plane_stacks, True,
    )


def _candidate(
    series: DicomSeries, role: str, rank: int, label: str, sentence: str, stacks: tuple[ImageStack, ...], from_description: bool
) -> _Candidate:
    spacing = [float(np.mean(s.geometry.spacing_mm[1:])) for s in stacks if s.geometry is not None]
    return _Candidate(
        series=series,
        role=role,
        rank=rank + (_DESCRIPTION_RANK_PENALTY if from_description else 0),
        kind_label=label,
        sentence=sentence,
        stacks=stacks,
        from_description=from_description,
        z_range=cranio_caudal_range([s.geometry for s in stacks if s.geometry is not None]),
        n_slices=sum(s.n_slices for s in stacks),
        resolution_mm=spacing[0],
    )


def assign_roles(series: Sequence[DicomSeries]) -> list[SeriesDecision]:
    """Decide the role of every series of one study.

    Args:
        series: the study's series (e.g. ``StudyScan.series``).

    Returns:
        One :class:`SeriesDecision` per input series, in input order. Every series gets a reason;
        at most one series per role per cranio-caudal station gets the role, the others are
        ``unused`` with ``candidate_role`` set and a reason naming the series they lost to.
    """
    outcomes = [_classify(s) for s in series]
    decisions: dict[str, SeriesDecision] = {}
    by_role: dict[str, list[_Candidate]] = {}
    for outcome in outcomes:
        if isinstance(outcome, SeriesDecision):
            decisions[outcome.series_instance_uid] = outcome
        else:
            by_role.setdefault(outcome.role, []).append(outcome)

    for role, candidates in by_role.items():
        ordered = sorted(candidates, key=functools.cmp_to_key(lambda a, b: _compare(a, b)[0]))
        kept: list[_Candidate] = []
        for candidate in ordered:
            rivals = [k for k in kept if overlap_fraction(k.z_range, candidate.z_range) >= STATION_OVERLAP]
            hint_warnings = _hint_warnings(candidate.series, candidate.sentence) if candidate.from_description else ()
            indices = tuple(s.index for s in candidate.stacks)
            if rivals:
                winner = rivals[0]
                why = _compare(winner, candidate)[1]
                decisions[candidate.series.series_instance_uid] = SeriesDecision(
                    candidate.series.series_instance_uid,
                    "unused",
                    f"{candidate.sentence}; {role} candidate, but {winner.series.label()} is preferred: {why}",
                    candidate_role=role,
                    stack_indices=indices,
                    description_hint=candidate.from_description,
                    warnings=hint_warnings,
                )
                continue
            station = (
                f" (separate station, z {candidate.z_range[0]:.0f} to {candidate.z_range[1]:.0f} mm)"
                if any(k.role == role for k in kept)
                else ""
            )
            kept.append(candidate)
            decisions[candidate.series.series_instance_uid] = SeriesDecision(
                candidate.series.series_instance_uid,
                role,
                candidate.sentence + station,
                stack_indices=indices,
                description_hint=candidate.from_description,
                warnings=hint_warnings,
            )
    return [decisions[s.series_instance_uid] for s in series]


def load_role_stacks(
    study: StudyScan, decisions: Sequence[SeriesDecision], roles: tuple[str, ...]
) -> tuple[list[tuple[SeriesDecision, LoadedStack]], list[StudyWarning]]:
    """Decode every stack the series with one of ``roles`` use (angled axial stacks are separate
    stacks of one series). A stack that cannot be decoded or has no geometry is skipped with a
    warning (``SERIES_UNREADABLE``, ``NO_GEOMETRY``); slices dropped on decoding keep theirs."""
    loaded: list[tuple[SeriesDecision, LoadedStack]] = []
    warnings: list[StudyWarning] = []
    for decision in decisions:
        if decision.role not in roles:
            continue
        series = study.series_by_uid(decision.series_instance_uid)
        for index in decision.stack_indices:
            try:
                stack = series.stacks[index].load()
            except SeriesReadError as error:
                warnings.append(StudyWarning("SERIES_UNREADABLE", str(error), decision.series_instance_uid))
                continue
            warnings.extend(stack.warnings)
            if stack.geometry is None:
                warnings.append(StudyWarning(
                    "NO_GEOMETRY", f"{series.label()}: a {decision.role} stack without usable geometry was not used",
                    decision.series_instance_uid,
                ))
                continue
            loaded.append((decision, stack))
    return loaded, warnings
