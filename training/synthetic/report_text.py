"""Free-text radiology reports for synthetic spine studies, with the labels the text implies.

The generator writes one report per study from its truth dict (the ``truth.json`` schema of the
brief). The reports are the test bed of the report labeller (issue 5), so they vary the way real
reports vary, and every statement written is also recorded as a structured :class:`Mention`; the
per-level labels a perfect reader would derive from the text follow from the mentions by the rules
below (:func:`labels_from_mentions`).

Public API
----------
* :func:`write_report` ``(truth, rng) -> str`` — the report text (what ``truth.json``'s
  ``report_text`` and ``report.txt`` hold).
* :func:`compose_report` ``(truth, rng) -> ReportText`` — the same text (same ``rng`` draws) plus
  its mentions, derived labels, the template ids and notation families used
  (``ReportText.to_json()`` for storage beside ``truth.json``).
* :func:`labels_from_mentions` — the label rules, reusable by the labeller evaluation.
* :func:`region_levels` — the levels a region phrase ("lower thoracic spine") denotes.

What varies
-----------
* **Layout**: four styles — ``structured`` (CAPITAL headings, level-by-level lumbar/cervical discs,
  numbered impression), ``prose`` (UK-style "Clinical details / Findings / Conclusion" paragraphs),
  ``terse`` (dash bullets, "Opinion"), ``proforma`` (MSCC key: value lines for the cancer findings);
  history/technique order, optional comparison, conclusion first or last.
* **Dialect**: US or UK spelling (tumor/tumour, edema/oedema, hemangioma/haemangioma,
  caliber/calibre, localizer/localiser, …), date formats, en dash or hyphen.
* **Level notations** (``Mention.notation`` names the family of ``Mention.level_text``):

  ========================  =====================================================================
  ``vertebra``              ``T10``, ``the T10 vertebral body``, ``T10 vertebra``, ``the T10 body``
  ``ordinal``               ``the tenth thoracic vertebra``, ``the fifth lumbar vertebral body``
  ``vertebra_list``         ``T4, T7 and L2``; may contain runs: ``T4 and T9 to T12`` / ``T9 through
                            T12`` / ``T9–T12``; US reports may use the Oxford comma
  ``range_through``         ``T10 through L2``
  ``range_to``              ``T10 to L2 inclusive``
  ``range_dash``            ``T10–L2``, ``T10-L2`` (ranges always span ≥ 3 levels, so never a disc)
  ``range_from_to``         ``all levels from T10 to L2``
  ``range_between``         ``the levels between T10 and L2 inclusive``
  ``region``                ``the lower thoracic spine``, ``the lumbar spine`` (see :data:`REGIONS`):
                            "throughout the …" / "no suspicious lesion in the …" set every imaged
                            level of the region; "multiple metastases in the …" sets none
  ``disc_slash``            ``L4/L5``, ``L5/S1``, ``C7/T1``
  ``disc_slash_short``      ``L4/5``, ``C5/6`` (same segment letter only)
  ``disc_dash``             ``L4-L5``, ``L4–L5``
  ``disc_dash_short``       ``L4-5``, ``C5–6``
  ``disc_between``          ``the disc between L4 and L5``
  ``listhesis_on``          ``anterolisthesis of L4 on L5`` (the disc L4/L5)
  ``disc_list``             ``L4/5 and L5/S1`` (one disc family inside)
  ``disc_range``            ``from L3-4 to L5-S1``, ``L3/4 through L5/S1``, ``L3/4 to L5/S1 inclusive``
  ``study``                 no level: a study-level statement
  ========================  =====================================================================

  Disc tokens are wrapped at random in "the … level", "the … disc", "… disc space", "the …
  intervertebral disc"; level-by-level layouts write the disc once as a line header
  (``"L4-L5: …"``) and the findings after it carry no level of their own (``level_text`` is the
  header).
* **Phrasings**: synonyms per finding (metastasis / metastatic deposit / secondary / marrow-replacing
  lesion / osseous metastatic disease; fracture / compression deformity / height loss / collapse /
  wedging / vertebra plana; cord compression / compression of the spinal cord / MESCC / MSCC with
  Bilsky grade mentions; cauda equina compression below the conus), degenerative terms (desiccation
  ~ Pfirrmann, loss of disc height, bulge / protrusion / extrusion, canal / foraminal / subarticular
  or lateral recess stenosis graded mild / moderate / severe), transitional anatomy
  ("transitional lumbosacral vertebra, designated L6"), history that names cancers and
  "?cord compression" without being a finding, and incidental sentences (haemangioma, Tarlov cyst,
  renal cyst, pleural effusion, nerve-root names such as "the traversing L5 nerve root").
* **Negations**: "no evidence of …", "no …", "without …", "negative for …", "… is not seen",
  "no other …", normality statements ("marrow signal is normal", "vertebral body heights are
  maintained", "the canal and exit foramina are patent", "normal disc hydration").
* **Hedging**: "possible", "cannot be excluded", "indeterminate", "equivocal", "query" / "?"
  (``hedge="possible"``) and "likely", "probable", "suspicious for", "favoured to represent"
  (``hedge="probable"``).
* **Omission**: findings are sometimes simply not mentioned (a positive level left out, a whole
  finding not discussed, a disc finding skipped), so "unknown" is common, as in real reports.

Label semantics
---------------
Every :class:`Mention` carries ``status``:

* ``positive`` — asserted without hedging ("in keeping with", "consistent with", "there is").
* ``negative`` — negated or stated normal.
* ``uncertain`` — hedged (either hedge strength). **Hedged statements map to the label
  ``unknown``** (SCT §4: inconclusive text gives no per-vertebra supervision); ``Mention.hedge``
  keeps the strength so a labeller may choose otherwise.

A mention's ``levels`` are exactly the vertebrae (cancer findings) or discs (disc findings) whose
label the statement sets: the listed/range-expanded levels, every imaged level for a global
statement ("no evidence of metastatic disease", "diffuse infiltration of every imaged vertebral
body"), the levels not otherwise mentioned for "no other …", the in-view levels of the region for
exhaustive region statements ("throughout the lumbar spine"). Non-exhaustive study-level statements
("widespread osseous metastatic disease", "multilevel degenerative disc disease", "further small
deposits are present") have ``scope="study"`` and no levels: they set the **study-level** label
only, and every level they do not name stays ``unknown`` (SCT's multiple-instance "bag" label).

Derived labels (:func:`labels_from_mentions`):

* per vertebra × ``CANCER_FINDINGS``: ``positive`` / ``negative`` / ``unknown``; not mentioned →
  ``unknown``, **except cord compression, which is ``negative`` unless mentioned** (SCT convention:
  a severe finding is not left unsaid). The generator honours this: every true cord compression
  is written, positive or hedged.
* per vertebra Bilsky grade where a grade is written.
* per disc × :data:`DISC_FINDINGS`: ``positive`` / ``negative`` / ``unknown``, plus the written
  grade in ``disc_grades`` (``mild``/``moderate``/``severe``; for disc degeneration these stand
  for Pfirrmann 3/4/5, written as "mild desiccation" / "a desiccated disc" / "a dark, desiccated
  disc"; CT reports give no grade). A stenosis
  ``negative`` means "none or not significant" and maps to RSNA ``Normal/Mild``, as does ``mild``.
  ``disc_bulge`` is descriptive (no truth counterpart; a bulge is not a herniation).
* per study × finding: ``positive`` if any positive mention; ``negative`` if the finding is negative
  at every imaged level; otherwise ``unknown`` (cord compression: ``negative`` unless mentioned).
* ``transitional``: ``"L6"``/``"T13"`` when stated, ``None`` when normal segmentation is stated,
  ``"unknown"`` when not discussed (the generator always states transitional anatomy when the extra
  vertebra is imaged).

Consistency with truth: a ``positive`` mention is only written for a truth-positive level, a
``negative`` only for truth-negative levels (stenosis: truth grade none, or ≤ mild for "no
significant …"); hedges may fall on either (mostly true lesions, sometimes a false alarm).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from operators.core.gradings import BILSKY_MR_GRADES, CANCER_FINDINGS
from operators.core.levels import CERVICAL, LUMBAR, THORACIC, disc_levels, level_order, levels_with_transitional

POSITIVE = "positive"
NEGATIVE = "negative"
UNCERTAIN = "uncertain"
UNKNOWN = "unknown"

#: Per-disc findings the report may state (``disc_bulge`` is descriptive, without truth).
DISC_FINDINGS: tuple[str, ...] = (
    "disc_degeneration",
    "disc_height_loss",
    "herniation",
    "disc_bulge",
    "canal_stenosis",
    "foraminal_stenosis_left",
    "foraminal_stenosis_right",
    "subarticular_stenosis_left",
    "subarticular_stenosis_right",
    "spondylolisthesis",
    "endplate_marrow_change",
    "endplate_defect",
)

STYLES: tuple[str, ...] = ("structured", "prose", "terse", "proforma")

_SEVERITY = ("none", "mild", "moderate", "severe")
_RSNA_TO_GRADE = {"Normal/Mild": 1, "Moderate": 2, "Severe": 3}

#: Region phrase → level prefix rule; the exact levels come from :func:`region_levels`.
REGIONS: dict[str, tuple[str, ...]] = {
    "cervical spine": CERVICAL,
    "upper thoracic spine": ("T1", "T2", "T3", "T4"),
    "mid thoracic spine": ("T5", "T6", "T7", "T8"),
    "lower thoracic spine": ("T9", "T10", "T11", "T12", "T13"),
    "thoracic spine": THORACIC + ("T13",),
    "thoracolumbar junction": ("T11", "T12", "T13", "L1", "L2"),
    "lumbar spine": LUMBAR + ("L6",),
}

_ORDINALS = (
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "eleventh", "twelfth", "thirteenth",
)
_SEGMENT_WORD = {"C": "cervical", "T": "thoracic", "L": "lumbar", "S": "sacral"}

#: US → UK spellings applied to UK-dialect reports (whole words, case kept).
_UK_SPELLING = {
    "tumor": "tumour", "tumors": "tumours", "edema": "oedema", "hemangioma": "haemangioma",
    "hemangiomas": "haemangiomas", "caliber": "calibre", "localizer": "localiser",
    "center": "centre", "centered": "centred", "hematoma": "haematoma", "favored": "favoured",
    "characterized": "characterised", "visualized": "visualised", "anesthesia": "anaesthesia",
    "gray": "grey", "esophagus": "oesophagus", "esophageal": "oesophageal", "paresthesia": "paraesthesia",
    "paresthesias": "paraesthesias", "color": "colour", "recognized": "recognised",
    "lumbarized": "lumbarised", "sacralized": "sacralised",
}
_CT_WORDING = re.compile(r"\bmarrow signal\b|\bsignal\b")
_UK_PATTERN = re.compile(r"\b(" + "|".join(sorted(_UK_SPELLING, key=len, reverse=True)) + r")\b", re.IGNORECASE)


@dataclass(frozen=True)
class Mention:
    """One statement in the report about one finding.

    Attributes:
        finding: a ``CANCER_FINDINGS`` name, ``"epidural_disease"``, or a :data:`DISC_FINDINGS` name.
        status: ``positive`` | ``negative`` | ``uncertain`` (hedged).
        scope: ``level`` | ``list`` | ``range`` | ``region`` | ``study`` — how the levels were written.
        levels: vertebrae (cancer findings) or disc names (disc findings) whose label this sets;
            empty for a non-exhaustive study- or region-level statement.
        level_text: the level phrase exactly as written in ``sentence`` ("" for study scope).
        notation: the notation family of ``level_text`` (module docstring table).
        template: id of the sentence/clause template used (``"family#index"``).
        sentence: the sentence (or level-by-level line) the statement is in, exactly as in the text.
        section: ``findings`` | ``impression``.
        hedge: ``None`` | ``"possible"`` | ``"probable"``.
        region: the region phrase for region-scope statements, else ``None``.
        detail: extra facts as written: ``grade`` (mild/moderate/severe for graded findings and
            disc degeneration; ``none``/``not_significant`` for negated ones), ``bilsky`` (MR grade),
            ``height_loss_percent``, ``herniation_type`` and ``location`` (herniation).
    """

    finding: str
    status: str
    scope: str
    levels: tuple[str, ...]
    level_text: str
    notation: str
    template: str
    sentence: str = ""
    section: str = "findings"
    hedge: str | None = None
    region: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportText:
    """A generated report and everything it states.

    Attributes:
        text: the report.
        mentions: every statement, findings section first (in order), then impression.
        vertebra_labels: imaged level → finding (``CANCER_FINDINGS``) → positive/negative/unknown.
            Imaged = centroid inside the z span of a diagnostic series (truth ``series[]``
            ``cranio_caudal_range_mm``); vertebrae outside it are not in the report or here.
        bilsky_labels: level → MR Bilsky grade where the text states one.
        disc_labels: imaged disc → finding (:data:`DISC_FINDINGS`) → positive/negative/unknown.
        disc_grades: disc → finding → written grade, for graded findings stated with a grade.
        study_labels: finding (cancer findings and disc findings) → positive/negative/unknown.
        transitional: ``"L6"``, ``"T13"``, ``None`` (normal segmentation stated) or ``"unknown"``.
        templates: template ids used (with repeats), for variety measurements.
        notations: notation families used for levels (with repeats).
        style: one of :data:`STYLES`.
        dialect: ``"us"`` or ``"uk"``.
    """

    text: str
    mentions: tuple[Mention, ...]
    vertebra_labels: dict[str, dict[str, str]]
    bilsky_labels: dict[str, str]
    disc_labels: dict[str, dict[str, str]]
    disc_grades: dict[str, dict[str, str]]
    study_labels: dict[str, str]
    transitional: str | None
    templates: tuple[str, ...]
    notations: tuple[str, ...]
    style: str
    dialect: str

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-serialisable form (mentions as dicts, tuples as lists)."""
        data = asdict(self)
        data["mentions"] = [{**m, "levels": list(m["levels"]), "detail": dict(m["detail"])} for m in data["mentions"]]
        data["templates"], data["notations"] = list(self.templates), list(self.notations)
        return data


def write_report(truth: Mapping[str, Any], rng: np.random.Generator) -> str:
    """Free-text radiology report for a study truth dict (``truth.json`` schema)."""
    return compose_report(truth, rng).text


def compose_report(truth: Mapping[str, Any], rng: np.random.Generator) -> ReportText:
    """The report for ``truth`` with its mentions and derived labels (same draws as :func:`write_report`)."""
    return _Composer(truth, rng).compose()


def region_levels(region: str, sequence: Sequence[str]) -> list[str]:
    """Levels of ``sequence`` (the imaged levels, cranial → caudal) that a region phrase denotes."""
    members = set(REGIONS[region])
    return [level for level in sequence if level in members]


_SCOPE_RANK = {"level": 0, "list": 0, "range": 0, "region": 1, "study": 2}
_STATUS_RANK = {POSITIVE: 0, UNCERTAIN: 1, NEGATIVE: 2}


def labels_from_mentions(
    mentions: Iterable[Mention], vertebrae: Sequence[str], discs: Sequence[str]
) -> tuple[dict[str, dict[str, str]], dict[str, str], dict[str, dict[str, str]], dict[str, dict[str, str]], dict[str, str]]:
    """Apply the label rules of the module docstring.

    Where two mentions set one label, the more specific scope wins (level/list/range over region
    over study), then positive over uncertain over negative.

    Returns:
        ``(vertebra_labels, bilsky_labels, disc_labels, disc_grades, study_labels)``.
    """
    mentions = list(mentions)
    best: dict[tuple[str, str], tuple[tuple[int, int], str]] = {}
    bilsky: dict[str, str] = {}
    grades: dict[str, dict[str, str]] = {disc: {} for disc in discs}
    for mention in mentions:
        rank = (_SCOPE_RANK[mention.scope], _STATUS_RANK[mention.status])
        for level in mention.levels:
            key = (level, mention.finding)
            if key not in best or rank < best[key][0]:
                best[key] = (rank, mention.status)
                grade = mention.detail.get("grade")
                if level in grades and grade is not None:
                    grades[level][mention.finding] = str(grade)
            if mention.finding == "epidural_disease" and "bilsky" in mention.detail:
                bilsky[level] = str(mention.detail["bilsky"])

    def label(level: str, finding: str) -> str:
        status = best.get((level, finding), (None, None))[1]
        if status is None:
            return NEGATIVE if finding == "cord_compression" else UNKNOWN
        return UNKNOWN if status == UNCERTAIN else status

    vertebra_labels = {v: {f: label(v, f) for f in CANCER_FINDINGS} for v in vertebrae}
    disc_labels = {d: {f: label(d, f) for f in DISC_FINDINGS} for d in discs}
    grades = {disc: values for disc, values in grades.items() if values}

    study: dict[str, str] = {}
    for finding, table, keys in (
        *((f, vertebra_labels, vertebrae) for f in CANCER_FINDINGS),
        *((f, disc_labels, discs) for f in DISC_FINDINGS),
    ):
        statuses = [m.status for m in mentions if m.finding == finding]
        per_level = [table[k][finding] for k in keys]
        if POSITIVE in statuses:
            study[finding] = POSITIVE
        elif per_level and all(value == NEGATIVE for value in per_level) and UNCERTAIN not in statuses:
            study[finding] = NEGATIVE
        else:
            study[finding] = UNKNOWN
    return vertebra_labels, bilsky, disc_labels, grades, study


# ---------------------------------------------------------------------------------------------
# Truth digestion
# ---------------------------------------------------------------------------------------------


@dataclass
class _DiscFacts:
    """Truth of one disc in report terms: grade 0..3 for graded findings, bools otherwise."""

    name: str
    pfirrmann: int
    narrowing: int
    herniation: bool
    canal: int
    foraminal: dict[str, int | None]  # side -> 0..3, or None when present without a severity
    subarticular: dict[str, int] | None  # lumbar (RSNA) discs only
    spondylolisthesis: bool
    marrow_change: bool
    endplate_defect: bool
    herniation_type: str | None = None  # protrusion | extrusion, when the truth details say
    herniation_side: str | None = None  # left | central | right, when the truth details say
    modic_type: int | None = None  # highest Modic type next to the disc, when the truth details say

    @property
    def abnormal(self) -> bool:
        return bool(
            self.pfirrmann >= 3 or self.narrowing or self.herniation or self.canal or self.spondylolisthesis
            or self.marrow_change or self.endplate_defect
            or any(v is None or v > 0 for v in self.foraminal.values())
            or (self.subarticular is not None and any(v > 0 for v in self.subarticular.values()))
        )

    def truth_grade(self, finding: str) -> int | None:
        """0..3 severity (None = present, severity not defined) for a disc finding."""
        side = finding.rsplit("_", 1)[-1]
        if finding == "disc_degeneration":
            return max(0, self.pfirrmann - 2)
        if finding == "disc_height_loss":
            return self.narrowing
        if finding == "canal_stenosis":
            return self.canal
        if finding.startswith("foraminal"):
            return self.foraminal[side]
        if finding.startswith("subarticular"):
            return None if self.subarticular is None else self.subarticular[side]
        flag = {"herniation": self.herniation, "spondylolisthesis": self.spondylolisthesis,
                "endplate_marrow_change": self.marrow_change, "endplate_defect": self.endplate_defect}[finding]
        return int(flag)


def _disc_facts(disc: Mapping[str, Any]) -> _DiscFacts:
    """Report-level facts of a truth disc.

    Severities come from the optional ``details`` (the phantom's 0..3 foraminal/subarticular
    severities, herniation type and side, Modic types) when the truth has them; otherwise from the
    SpineNet gradings and RSNA labels, where RSNA ``Normal/Mild`` is split into none/mild by the
    SpineNet grading and a subarticular ``Normal/Mild`` (no grading to split it) counts as none.
    """
    gradings = disc.get("gradings") or {}
    rsna = disc.get("rsna") or {}
    details = disc.get("details") or {}

    def rsna_grade(condition: str, fallback: int) -> int:
        value = rsna.get(condition)
        if value is None:
            return fallback
        grade = _RSNA_TO_GRADE[value]
        return min(fallback, 1) if grade == 1 else grade

    canal = rsna_grade("spinal_canal_stenosis", int(gradings.get("central_canal_stenosis", 0)))
    foraminal: dict[str, int | None] = {}
    exact_foraminal = details.get("foraminal_severity") or {}
    for side in ("left", "right"):
        binary = int(gradings.get(f"foraminal_stenosis_{side}", 0))
        if side in exact_foraminal:
            foraminal[side] = int(exact_foraminal[side])
        elif f"{side}_neural_foraminal_narrowing" in rsna:
            foraminal[side] = rsna_grade(f"{side}_neural_foraminal_narrowing", binary)
        else:
            foraminal[side] = None if binary else 0
    subarticular = None
    exact_subarticular = details.get("subarticular_severity") or {}
    if any(k.endswith("subarticular_stenosis") for k in rsna):
        subarticular = {}
        for side in ("left", "right"):
            grade = _RSNA_TO_GRADE[rsna.get(f"{side}_subarticular_stenosis", "Normal/Mild")]
            subarticular[side] = int(exact_subarticular.get(side, grade if grade > 1 else 0))
    herniation_type = details.get("herniation_type")
    modic = [int(details.get(key, 0) or 0) for key in ("modic_upper", "modic_lower")]
    return _DiscFacts(
        name=str(disc["level"]),
        pfirrmann=int(gradings.get("pfirrmann", 1)),
        narrowing=int(gradings.get("narrowing", 0)),
        herniation=bool(gradings.get("herniation", 0)),
        canal=canal,
        foraminal=foraminal,
        subarticular=subarticular,
        spondylolisthesis=bool(gradings.get("spondylolisthesis", 0)),
        marrow_change=bool(gradings.get("upper_marrow_change", 0) or gradings.get("lower_marrow_change", 0)),
        endplate_defect=bool(gradings.get("upper_endplate_defect", 0) or gradings.get("lower_endplate_defect", 0)),
        herniation_type=str(herniation_type) if herniation_type not in (None, "none") else None,
        herniation_side=details.get("herniation_side"),
        modic_type=max(modic) if any(modic) else None,
    )


def _imaged_test(truth: Mapping[str, Any]) -> Callable[[Sequence[float] | None], bool]:
    """Whether a truth point (vertebra centroid, disc centre) lies in the imaged cranio-caudal span.

    The truth lists every vertebra of the body; a report describes only what the diagnostic series
    (role other than ``unused``) cover, judged by the series' ``cranio_caudal_range_mm`` (z extent).
    Without ranges in the truth, everything listed counts as imaged.
    """
    series = [s for s in truth.get("series") or [] if s.get("cranio_caudal_range_mm")]
    diagnostic = [s for s in series if s.get("expected_role", "unused") != "unused"] or series
    spans = [tuple(float(z) for z in s["cranio_caudal_range_mm"]) for s in diagnostic]
    if not spans:
        return lambda point: True
    return lambda point: point is None or any(low <= float(point[2]) <= high for low, high in spans)


_BILSKY_RANK = {grade: i for i, grade in enumerate(BILSKY_MR_GRADES)}


def _max_bilsky(grades: Iterable[str]) -> str:
    valid = [g for g in grades if g in _BILSKY_RANK]
    return max(valid, key=_BILSKY_RANK.__getitem__) if valid else "0"


# ---------------------------------------------------------------------------------------------
# Phrase tables. Every list index is part of a template id, so append, don't reorder.
# ---------------------------------------------------------------------------------------------

_MET_POSITIVE = (
    "there is a {desc}lesion in {v}, in keeping with a metastasis",
    "metastatic deposit in {v}",
    "{v} {contain} a {desc}marrow-replacing lesion consistent with metastatic disease",
    "secondary deposit{s} at {v}",
    "osseous metastatic disease involves {v}",
    "{desc}lesion{s} at {v}, compatible with metastas{es}",
    "there {are} metastas{es} in {v}",
    "focal {desc}marrow lesion{s} in {v}, typical of metastatic disease",
    "metastatic involvement of {v}",
    "{v} {is} replaced by tumor",
    "bony metastas{es}: {v}",
)
_MET_HEDGED = (
    ("possible", "there is a small {desc}focus in {v}; a metastasis cannot be excluded"),
    ("possible", "possible early metastatic deposit in {v}"),
    ("probable", "subtle marrow signal change in {v}, suspicious for metastatic infiltration"),
    ("probable", "likely metastatic involvement of {v}"),
    ("possible", "indeterminate marrow lesion in {v}"),
    ("possible", "equivocal signal in {v}; correlation with CT or bone scan is suggested"),
    ("probable", "the {desc}lesion in {v} is favored to represent a metastasis"),
    ("possible", "? metastasis at {v}"),
    ("probable", "probable metastatic deposit in {v}"),
    ("possible", "focal signal change in {v} may represent a metastasis"),
)
_MET_NEGATIVE_ALL = (
    "no evidence of metastatic disease",
    "no suspicious marrow lesion",
    "bone marrow signal is within normal limits",
    "normal marrow signal throughout",
    "negative for osseous metastatic disease",
    "no vertebral metastases are identified",
    "there is no marrow-replacing lesion to suggest metastasis",
    "metastatic disease is not seen",
    "no focal bone lesion",
    "the marrow signal is normal, without a suspicious focal lesion",
)
_MET_NEGATIVE_OTHER = (
    "no other suspicious marrow lesion",
    "elsewhere, the marrow signal is normal",
    "no further metastases are seen",
    "the remaining vertebrae show normal marrow signal",
    "no other focal bone lesion is identified",
    "there is no evidence of metastatic disease elsewhere",
)
_MET_NEGATIVE_LEVELS = (
    "no suspicious marrow lesion at {v}",
    "normal marrow signal at {v}",
    "no metastatic deposit at {v}",
)
_MET_STUDY = (
    "widespread osseous metastatic disease throughout the spine",
    "diffuse metastatic infiltration of the spine",
    "multiple spinal metastases",
    "extensive bony metastatic disease",
    "innumerable metastatic deposits throughout the imaged spine",
    "there are widespread secondary deposits",
)
_MET_REGION_SOME = (
    "multiple metastases in the {region}",
    "several deposits are present in the {region}",
    "metastatic disease in the {region}",
)
_MET_STUDY_EVERY = (
    "diffuse metastatic infiltration of every imaged vertebral body",
    "all visualized vertebrae are diffusely replaced by metastatic disease",
    "every vertebral body imaged is involved by metastatic disease",
)
_MET_MOST_MARKED = (
    "most marked at {v}",
    "the largest deposit{s} at {v}",
    "including {v}",
    "with dominant lesion{s} at {v}",
)
_MET_FURTHER = (
    "further small deposits are present but are not individually described",
    "there are additional smaller lesions elsewhere",
    "other small metastases are also noted",
)
_MET_REGION_EXHAUSTIVE = (
    "metastatic infiltration throughout the {region}",
    "every level of the {region} is involved by metastatic disease",
)
_MET_REGION_NEGATIVE = (
    "no suspicious lesion in the {region}",
    "the {region} is clear of metastatic disease",
    "no evidence of metastatic disease in the {region}",
)
_HEMANGIOMA = (
    "typical hemangioma in {v} (high T1 and T2 signal), not of concern",
    "incidental benign hemangioma in {v}",
    "a small fat-containing hemangioma in {v} is of no significance",
)

_FRACTURE_POSITIVE = (
    "{path}compression fracture of {v} with approximately {pct}% loss of height",
    "collapse of {v}",
    "height loss of about {pct}% at {v}",
    "{path}fracture of {v}, Genant grade {genant}",
    "there is {path}vertebral collapse at {v}",
    "loss of height of {v} ({pct}%)",
    "{v} is fractured with {pct}% height loss",
)
#: Shape-specific wording, used only when the truth ``details`` give the fracture type.
_FRACTURE_TYPED = {
    "wedge": ("{path}wedge compression deformity of {v}", "anterior wedging of {v}"),
    "biconcave": ("{path}biconcave fracture of {v}", "biconcave endplate deformity of {v}"),
    "crush": ("{path}crush fracture of {v}", "{v} has collapsed in a crush pattern"),
}
_FRACTURE_AGE = {
    True: (", with marrow edema in keeping with a recent fracture", "; the marrow edema suggests an acute injury"),
    False: ("; no marrow edema, suggesting a chronic fracture", ", without marrow edema"),
}
_FRACTURE_PLANA = ("vertebra plana at {v}", "near-complete collapse of {v}")
_FRACTURE_HEDGED = (
    ("possible", "possible subtle endplate fracture at {v}"),
    ("possible", "minor anterior height loss of {v}, possibly developmental"),
    ("probable", "probable mild compression fracture of {v}"),
    ("possible", "questionable height loss at {v}"),
)
_FRACTURE_NEGATIVE_ALL = (
    "vertebral body heights are maintained",
    "no vertebral collapse",
    "no compression fracture",
    "no fracture is seen",
    "vertebral body height and alignment are preserved",
    "negative for fracture",
)
_FRACTURE_NEGATIVE_LEVELS = ("vertebral body heights are preserved at {v}", "no fracture at {v}")
_FRACTURE_NEGATIVE_OTHER = (
    "no other vertebral collapse",
    "remaining vertebral body heights are preserved",
    "no further fracture",
)

_CORD_WORDS_CORD = ("compression of the spinal cord", "cord compression", "spinal cord compression")
_CORD_WORDS_CAUDA = ("compression of the cauda equina", "cauda equina compression")
_CORD_POSITIVE = (
    "epidural extension of tumor at {v} causes {cc}{bilsky}",
    "there is metastatic {cc} at {v}{bilsky}",
    "MESCC at {v}{bilsky}",
    "{v}: epidural disease with {cc}{bilsky}",
    "soft tissue tumor extends into the canal at {v}, with {cc}{bilsky}",
    "severe canal compromise at {v} with {cc}{bilsky}",
)
_CORD_HEDGED = (
    ("possible", "epidural soft tissue at {v} with possible early {cc}{bilsky}"),
    ("possible", "{cc} at {v} cannot be excluded on this study{bilsky}"),
    ("probable", "likely {cc} at {v}{bilsky}"),
)
_EPIDURAL_NO_CC = (
    "epidural tumor at {v} without {cc}{bilsky}",
    "there is epidural disease at {v}{bilsky}; no {cc}",
    "epidural extension at {v} abuts the thecal sac, without {cc}{bilsky}",
)
_BILSKY_FORMS = (" (Bilsky {g})", " (Bilsky grade {g})", ", ESCC grade {g}", " - Bilsky {g}")
_CORD_NEGATIVE_ALL = (
    "no cord compression",
    "no evidence of metastatic spinal cord compression",
    "the spinal cord is normal in caliber and signal, without compression",
    "no compression of the spinal cord or cauda equina",
    "cord compression is not seen",
    "negative for MSCC",
    "no epidural disease or cord compression",
)
_CORD_NEGATIVE_OTHER = ("no cord compression elsewhere", "no other level of cord compression")

_DEGENERATION = {
    1: ("mild disc desiccation", "early desiccation of the disc", "partial loss of disc T2 signal"),
    2: ("disc desiccation", "loss of normal disc T2 signal", "a desiccated disc"),
    3: ("severe disc desiccation", "a dark, desiccated disc", "advanced disc degeneration"),
}
_DEGENERATION_CT = ("degenerative disc disease", "a vacuum disc phenomenon")
_HEIGHT_LOSS = ("{sev} loss of disc height", "{sev} disc space narrowing", "{sev} reduction in disc height")
_HERNIATION = ("a {loc} disc {kind}", "a {loc} {kind}", "{kind} of the disc ({loc})")
_HERNIATION_HEDGED = (
    ("possible", "a possible small {loc} protrusion"),
    ("possible", "? a small {loc} disc protrusion"),
    ("possible", "an equivocal {loc} annular bulge versus small protrusion"),
    ("probable", "what is likely a small {loc} protrusion"),
)
_BULGE = ("a broad-based disc bulge", "a diffuse disc bulge", "mild circumferential bulging of the disc")
_BULGE_CERVICAL = ("a disc-osteophyte complex", "a broad disc-osteophyte bar")
_CANAL = ("{sev} central canal stenosis", "{sev} spinal canal stenosis", "{sev} narrowing of the spinal canal",
          "{sev} canal narrowing")
_FORAMINAL = ("{sev}{side} foraminal narrowing", "{sev}{side} neural foraminal stenosis",
              "{sev}{side} exit foraminal narrowing", "{sev}{side} foraminal stenosis")
_SUBARTICULAR = ("{sev}{side} subarticular stenosis", "{sev}{side} lateral recess stenosis",
                 "{sev}{side} subarticular recess narrowing")
_NERVE_ROOT = (", contacting the traversing {side}{root} nerve root", ", which may affect the {side}{root} nerve root")
_LISTHESIS = ("grade 1 anterolisthesis", "degenerative spondylolisthesis", "a grade I anterolisthesis")
_LISTHESIS_ON = ("grade 1 anterolisthesis of {upper} on {lower}", "degenerative anterolisthesis of {upper} on {lower}")
_MODIC = {
    None: ("Modic endplate change", "degenerative endplate marrow signal change"),
    1: ("type 1 Modic endplate change", "endplate edema (Modic 1)"),
    2: ("type 2 Modic endplate change", "fatty endplate marrow change (Modic 2)"),
    3: ("type 3 Modic endplate change", "endplate sclerosis (Modic 3)"),
}
_ENDPLATE_DEFECT = ("a Schmorl's node", "endplate irregularity", "a small endplate defect")
_SEVERITY_WORDS = {1: ("mild",), 2: ("moderate",), 3: ("severe", "marked", "high-grade")}

#: Negated disc-finding groups: (findings, noun for "no …"/"without …", whole-statement forms).
_DISC_NEGATION_GROUPS: tuple[tuple[tuple[str, ...], str, tuple[str, ...]], ...] = (
    (("canal_stenosis", "foraminal_stenosis_left", "foraminal_stenosis_right"), "canal or foraminal stenosis",
     ("the canal and exit foramina are patent", "no spinal canal or neural foraminal narrowing")),
    (("canal_stenosis",), "canal stenosis", ("the spinal canal is of normal caliber",)),
    (("foraminal_stenosis_left", "foraminal_stenosis_right"), "foraminal narrowing",
     ("the exit foramina are patent",)),
    (("subarticular_stenosis_left", "subarticular_stenosis_right"), "subarticular stenosis",
     ("the lateral recesses are clear",)),
    (("herniation",), "disc herniation", ("no disc protrusion or extrusion",)),
    (("herniation", "canal_stenosis", "foraminal_stenosis_left", "foraminal_stenosis_right"),
     "disc herniation, canal or foraminal stenosis", ()),
    (("disc_degeneration",), "disc desiccation", ("normal disc hydration", "preserved disc signal")),
    (("disc_height_loss",), "loss of disc height", ("disc height is maintained",)),
)
_NEGATION_FORMS = ("no {b}", "no evidence of {b}", "negative for {b}", "{b} is not seen", "no significant {b}")
_NORMAL_DISC = ("normal", "unremarkable", "no abnormality", "normal disc, canal and foramina")

_PRIMARIES = ("breast", "prostate", "lung", "renal cell", "colorectal", "thyroid", "esophageal")
_HISTORY_CANCER = (
    "known {primary} carcinoma with new back pain. ? metastases",
    "{primary} cancer, staging. Assess for spinal metastatic disease",
    "metastatic {primary} cancer; new leg weakness. ? cord compression",
    "history of {primary} carcinoma. Thoracic back pain, worse at night",
    "MSCC pathway: known {primary} primary, bilateral leg paresthesias",
    "myeloma; back pain",
    "{primary} cancer on treatment. Restaging",
)
_HISTORY_DEGENERATIVE = (
    "low back pain radiating to the {side} leg",
    "{side} L5 radiculopathy, not improving with physiotherapy",
    "chronic low back pain. ? canal stenosis",
    "sciatica ({side})",
    "neurogenic claudication",
    "back pain for 6 months, no red flags",
)
_HISTORY_CERVICAL = (
    "neck pain with {side} arm paresthesia",
    "{side} C6 radiculopathy",
    "neck pain, ? myelopathy",
)
_HISTORY_TRAUMA = ("fall; ? osteoporotic fracture", "sudden onset thoracolumbar pain, osteoporosis",
                   "back pain after minor trauma")
_COMPARISON = (
    "none", "no prior imaging available", "none available", "CT chest, abdomen and pelvis of {date}",
    "prior MRI of {date}", "plain radiographs of {date}", "bone scan of {date} (report only)",
)

_INCIDENTAL = {
    "conus": ("the conus medullaris terminates at {conus} and is normal", "the conus is normal in position and signal"),
    "paraspinal": ("paravertebral soft tissues are unremarkable", "no paraspinal mass", "the paraspinal muscles are normal"),
    "kidney": ("incidental simple cyst in the {side} kidney", "the partially imaged kidneys are unremarkable"),
    "sij": ("the sacroiliac joints appear normal", "mild degenerative change at the sacroiliac joints"),
    "tarlov": ("small Tarlov cyst at S2, of no clinical significance", "perineural cysts at S2"),
    "facet": ("mild facet joint arthropathy in the lower lumbar spine", "facet joint hypertrophy at the lower lumbar levels"),
    "thyroid": ("incidental {side} thyroid nodule; ultrasound could be considered", "the visualized thyroid is unremarkable"),
    "craniocervical": ("the craniocervical junction is normal", "the posterior fossa and foramen magnum are unremarkable"),
    "pleural": ("small bilateral pleural effusions", "the visualized lung bases are clear"),
    "aorta": ("the abdominal aorta is of normal caliber", "atherosclerotic change in the aorta"),
}

_KIND_NAMES = {
    "sag_t1": ("sagittal T1", "sag T1 TSE", "T1-weighted sagittal"),
    "sag_t2": ("sagittal T2", "sag T2 TSE", "T2-weighted sagittal"),
    "sag_stir": ("sagittal STIR", "sagittal short tau inversion recovery (STIR)"),
    "sag_t2_fs": ("sagittal T2 fat-saturated", "sagittal T2 FS"),
    "sag_t1_fs": ("sagittal T1 fat-saturated",),
    "sag_t1_post": ("post-contrast sagittal T1 fat-saturated", "sagittal T1 post gadolinium"),
    "ax_t2": ("axial T2", "axial T2 TSE", "axial T2-weighted"),
    "ax_t2_gre": ("axial T2* gradient echo",),
    "ax_t1": ("axial T1",),
    "cor_t2": ("coronal T2",),
    "localizer": ("localizer", "three-plane localizer"),
    "dwi": ("diffusion-weighted imaging", "DWI"),
    "ct_axial": ("axial CT", "helical CT"),
    "ct_sag_reformat": ("sagittal reformats",),
    "ct_cor_reformat": ("coronal reformats",),
    "ct_scout": ("scout view",),
}
_FOV_NAMES = {"lumbar": "lumbar spine", "thoracic": "thoracic spine", "cervical": "cervical spine",
              "whole": "whole spine"}

_SECTION_TITLES = {
    "structured": {"header": "EXAMINATION", "history": "CLINICAL HISTORY", "technique": "TECHNIQUE",
                   "comparison": "COMPARISON", "findings": "FINDINGS", "impression": "IMPRESSION"},
    "prose": {"header": "", "history": "Clinical details", "technique": "Technique",
              "comparison": "Comparison", "findings": "Findings", "impression": "Conclusion"},
    "terse": {"header": "", "history": "Indication", "technique": "Sequences", "comparison": "Prior",
              "findings": "Report", "impression": "Opinion"},
    "proforma": {"header": "", "history": "Clinical information", "technique": "Protocol",
                 "comparison": "Comparison", "findings": "Findings", "impression": "Summary"},
}


# ---------------------------------------------------------------------------------------------
# Composer
# ---------------------------------------------------------------------------------------------


@dataclass
class _Sentence:
    """A sentence and what it states; ``line`` marks ``"Key: value"`` lines laid out one per line."""

    text: str
    mentions: list[Mention]
    line: bool = False


class _Composer:
    """Writes one report; every random choice comes from ``rng`` in a fixed order."""

    def __init__(self, truth: Mapping[str, Any], rng: np.random.Generator) -> None:
        self.truth = truth
        self.rng = rng
        self.templates: list[str] = []
        self.kinds = [s.get("kind", "") for s in truth.get("series") or []]
        self.is_ct = bool(self.kinds) and all(k.startswith("ct") for k in self.kinds)
        self.style = STYLES[int(rng.choice(len(STYLES), p=[0.3, 0.3, 0.2, 0.2]))]
        self.dialect = "uk" if (rng.random() < (0.75 if self.style == "prose" else 0.4)) else "us"
        self.dash = "–" if rng.random() < 0.3 else "-"
        self.disc_family = str(rng.choice(["disc_slash", "disc_slash_short", "disc_dash", "disc_dash_short"]))
        self.oxford = self.dialect == "us" and rng.random() < 0.5

        anatomy = truth.get("anatomy") or {}
        self.transitional = anatomy.get("transitional")
        imaged = _imaged_test(truth)
        vertebrae = sorted((v for v in truth.get("vertebrae") or [] if imaged(v.get("centroid_mm"))),
                           key=lambda v: level_order(v["level"]))
        self.levels: list[str] = [v["level"] for v in vertebrae]
        self.sequence = levels_with_transitional(
            thirteen_thoracic=self.transitional == "T13" or "T13" in self.levels,
            six_lumbar=self.transitional == "L6" or "L6" in self.levels)
        self.lesions: dict[str, Mapping[str, Any]] = {v["level"]: v.get("lesions") or {} for v in vertebrae}
        discs = sorted((d for d in truth.get("discs") or [] if imaged(d.get("centre_mm"))),
                       key=lambda d: level_order(disc_levels(d["level"])[0]))
        # There is no disc between atlas and axis; a truth entry for it is never reported.
        self.discs: list[_DiscFacts] = [_disc_facts(d) for d in discs if d["level"] != "C1/C2"]
        self.disc_names = [d.name for d in self.discs]
        self.fov = str(truth.get("field_of_view", "lumbar"))
        bilsky: dict[str, list[str]] = {}
        for entry in truth.get("bilsky") or []:
            bilsky.setdefault(str(entry.get("level")), []).append(str(entry.get("grade")))
        self.bilsky = {lv: _max_bilsky([str(self.lesions[lv].get("epidural_bilsky", "0")), *bilsky.get(lv, [])])
                       for lv in self.levels}
        self.details: dict[str, Mapping[str, Any]] = {v["level"]: v.get("details") or {} for v in vertebrae}
        # Only a conus level the truth states is written (an invented one could contradict it).
        self.conus: str | None = anatomy.get("conus_level")

    # -- small helpers --------------------------------------------------------------------------
    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def choose(self, options: Sequence[Any]) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def pick(self, key: str, variants: Sequence[str], **slots: Any) -> str:
        """Fill one variant of a template family and record its id."""
        index = int(self.rng.integers(len(variants)))
        self.templates.append(f"{key}#{index}")
        return self.spell(variants[index].format(**slots))

    def pick_hedged(self, key: str, variants: Sequence[tuple[str, str]], **slots: Any) -> tuple[str, str]:
        index = int(self.rng.integers(len(variants)))
        self.templates.append(f"{key}#{index}")
        hedge, text = variants[index]
        return hedge, self.spell(text.format(**slots))

    def spell(self, text: str) -> str:
        """Apply the report's dialect (and CT wording: CT shows density, not signal)."""
        if self.is_ct:
            text = _CT_WORDING.sub(lambda m: "bone density" if m.group(0) == "marrow signal" else "density", text)
        if self.dialect != "uk":
            return text

        def swap(match: re.Match[str]) -> str:
            word = match.group(0)
            uk = _UK_SPELLING[word.lower()]
            return uk.capitalize() if word[0].isupper() else uk

        return _UK_PATTERN.sub(swap, text)

    def join(self, items: Sequence[str]) -> str:
        if len(items) == 1:
            return items[0]
        tail = ", and " if self.oxford and len(items) > 2 else " and "
        return ", ".join(items[:-1]) + tail + items[-1]

    @staticmethod
    def sentence(text: str) -> str:
        text = text.strip()
        return text[0].upper() + text[1:] + ("" if text.endswith((".", "?")) else ".")

    # -- level notation -------------------------------------------------------------------------
    def vertebra(self, level: str) -> tuple[str, str]:
        """One vertebra as ``(text, family)``: "T10", "the T10 vertebral body", "the tenth thoracic vertebra"…"""
        if self.chance(0.08):
            letter, number = level[0], int(level[1:])
            noun = self.choose(["vertebra", "vertebral body"])
            return f"the {_ORDINALS[number - 1]} {_SEGMENT_WORD[letter]} {noun}", "ordinal"
        return self.choose([level, level, f"the {level} vertebral body", f"{level} vertebra", f"the {level} body"]), "vertebra"

    def runs(self, levels: Sequence[str]) -> list[list[str]]:
        """Split levels into runs contiguous in the spine's level sequence."""
        ordered = sorted(levels, key=self.sequence.index)
        out: list[list[str]] = []
        for level in ordered:
            if out and self.sequence.index(level) == self.sequence.index(out[-1][-1]) + 1:
                out[-1].append(level)
            else:
                out.append([level])
        return out

    def range_text(self, first: str, last: str) -> tuple[str, str]:
        family = self.choose(["range_through", "range_to", "range_dash", "range_from_to", "range_between"])
        text = {
            "range_through": f"{first} through {last}",
            "range_to": f"{first} to {last} inclusive",
            "range_dash": f"{first}{self.dash}{last}",
            "range_from_to": f"all levels from {first} to {last}",
            "range_between": f"the levels between {first} and {last} inclusive",
        }[family]
        return text, family

    def vertebrae(self, levels: Sequence[str]) -> tuple[str, str, str]:
        """Several vertebrae as ``(text, notation family, scope)``: one token, a range or a list."""
        if len(levels) == 1:
            text, family = self.vertebra(levels[0])
            return text, family, "level"
        runs = self.runs(levels)
        use_ranges = self.chance(0.85)
        if len(runs) == 1 and len(runs[0]) >= 3 and use_ranges:
            text, family = self.range_text(runs[0][0], runs[0][-1])
            return text, family, "range"
        parts: list[str] = []
        inner = self.choose(["{a} to {b}", "{a} through {b}", "{a}" + self.dash + "{b}"])
        for run in runs:
            if len(run) >= 3 and use_ranges:
                parts.append(inner.format(a=run[0], b=run[-1]))
            else:
                parts.extend(run)
        return self.join(parts), "vertebra_list", "list"

    def disc_token(self, disc: str, family: str | None = None) -> tuple[str, str]:
        upper, lower = disc_levels(disc)
        family = family or (self.disc_family if self.chance(0.8) else
                            self.choose(["disc_slash", "disc_slash_short", "disc_dash", "disc_dash_short"]))
        same_segment = upper[0] == lower[0]
        if family.endswith("_short") and not same_segment:
            family = family[: -len("_short")]
        sep = "/" if family.startswith("disc_slash") else self.dash
        text = f"{upper}{sep}{lower[1:] if family.endswith('_short') else lower}"
        return text, family

    def discs_text(self, discs: Sequence[str]) -> tuple[str, str, str]:
        """Several discs as ``(text, family, scope)``: a range when contiguous (≥ 3), else a list."""
        family = self.disc_family
        indices = [self.disc_names.index(d) for d in discs]
        tokens = [self.disc_token(d, family)[0] for d in discs]
        if len(discs) >= 3 and indices == list(range(indices[0], indices[0] + len(discs))) and self.chance(0.7):
            form = self.choose(["from {a} to {b}", "{a} through {b}", "{a} to {b} inclusive"])
            return form.format(a=tokens[0], b=tokens[-1]), "disc_range", "range"
        return self.join(tokens), "disc_list", "list"

    def disc(self, disc: str) -> tuple[str, str]:
        """A disc in running text: a token, maybe wrapped ("the L4-5 level"), or "the disc between …"."""
        if self.chance(0.06):
            upper, lower = disc_levels(disc)
            return f"the disc between {upper} and {lower}", "disc_between"
        token, family = self.disc_token(disc)
        wrapper = self.choose(["{t}", "{t}", "{t}", "the {t} level", "the {t} disc", "{t} disc space",
                               "the {t} intervertebral disc"])
        return wrapper.format(t=token), family

    # -- mentions -------------------------------------------------------------------------------
    def mention(self, finding: str, status: str, levels: Sequence[str], level_text: str, notation: str,
                scope: str, hedge: str | None = None, region: str | None = None, **detail: Any) -> Mention:
        return Mention(finding=finding, status=status, scope=scope, levels=tuple(levels), level_text=level_text,
                       notation=notation, template=self.templates[-1], hedge=hedge, region=region,
                       detail=dict(detail))

    def study_mention(self, finding: str, status: str, levels: Sequence[str] = (), **detail: Any) -> Mention:
        return self.mention(finding, status, levels, "", "study", "study", **detail)

    # -- truth helpers --------------------------------------------------------------------------
    def truth_levels(self, key: str) -> list[str]:
        return [lv for lv in self.levels if self.lesions[lv].get(key)]

    def met_descriptor(self, levels: Sequence[str]) -> str:
        """An imaging descriptor of metastases at ``levels`` that the sequences and truth support.

        Sclerotic vs lytic (and so "STIR hyperintense") is only claimed when the truth ``details``
        say so for every level; otherwise the descriptor stays neutral.
        """
        sclerotic = {self.details[lv].get("metastasis_sclerotic") for lv in levels}
        known_sclerotic = sclerotic == {True}
        known_lytic = sclerotic == {False}
        words = [""]
        if self.is_ct:
            if known_sclerotic:
                words.append("sclerotic ")
            elif known_lytic:
                words += ["lytic ", "destructive lytic "]
            return self.choose(words)
        if "sag_t1" in self.kinds:
            words.append("T1 hypointense ")
        if known_sclerotic:
            if "sag_t2" in self.kinds:
                words.append("T1 and T2 hypointense (sclerotic) ")
        elif "sag_stir" in self.kinds:
            words.append("STIR hyperintense ")
            if "sag_t1" in self.kinds:
                words.append("T1 hypointense, STIR hyperintense ")
        elif "sag_t2_fs" in self.kinds:
            words.append("T2 fat-sat hyperintense ")
        return self.choose(words)

    # -- findings blocks -------------------------------------------------------------------------
    def metastasis_block(self) -> tuple[list[_Sentence], dict[str, str]]:
        """Sentences about metastases and the per-level status written (for fracture/impression)."""
        positives = self.truth_levels("metastasis")
        negatives = [lv for lv in self.levels if lv not in positives]
        written: dict[str, str] = {}
        out: list[_Sentence] = []
        patterns = {str(self.lesions[lv].get("metastasis_pattern", "none")) for lv in positives}
        widespread = bool(positives) and ("diffuse" in patterns or len(positives) >= 6)

        # Benign distractors and false alarms on truth-negative levels.
        if negatives and not self.is_ct and self.chance(0.2):
            level = self.choose(negatives)
            v, family = self.vertebra(level)
            text = self.sentence(self.pick("met.hemangioma", _HEMANGIOMA, v=v))
            out.append(_Sentence(text, [self.mention("metastasis", NEGATIVE, [level], v, family, "level")]))
            written[level] = NEGATIVE
        if negatives and self.chance(0.08):
            level = self.choose([lv for lv in negatives if lv not in written] or negatives)
            if level not in written:
                out.append(self.hedged_metastasis([level]))
                written[level] = UNCERTAIN

        if not positives:
            rest = [lv for lv in self.levels if lv not in written]
            if rest and self.chance(0.8):
                others = bool(written) and self.chance(0.7)
                if others:
                    out.append(self.closing_negative("metastasis", "met", _MET_NEGATIVE_OTHER, _MET_NEGATIVE_LEVELS, rest))
                else:
                    text = self.sentence(self.pick("met.negative_all", _MET_NEGATIVE_ALL))
                    out.append(_Sentence(text, [self.study_mention("metastasis", NEGATIVE, rest)]))
                written.update({lv: NEGATIVE for lv in rest})
            elif self.chance(0.5):
                out.extend(self.region_negatives(written))
            return out, written

        if widespread and self.chance(0.65):
            every = len(positives) == len(self.levels) and self.chance(0.5)
            if every:
                text = self.pick("met.study_every", _MET_STUDY_EVERY)
                mentions = [self.study_mention("metastasis", POSITIVE, self.levels)]
                written.update({lv: POSITIVE for lv in self.levels})
            else:
                regions = [r for r in ("cervical spine", "thoracic spine", "lumbar spine")
                           if set(positives) <= set(region_levels(r, self.levels))]
                if regions and self.chance(0.4):
                    region = regions[0]
                    text = self.pick("met.region_some", _MET_REGION_SOME, region=region)
                    mentions = [self.mention("metastasis", POSITIVE, (), f"the {region}", "region", "region",
                                             region=region)]
                else:
                    text = self.pick("met.study", _MET_STUDY)
                    mentions = [self.study_mention("metastasis", POSITIVE)]
            if not every and self.chance(0.6):
                long_runs = [run for run in self.runs(positives) if len(run) >= 3]
                if long_runs and self.chance(0.4):
                    named = list(self.choose(long_runs))
                else:
                    size = min(len(positives), int(self.rng.integers(1, 4)))
                    named = sorted(self.rng.choice(positives, size=size, replace=False).tolist(),
                                   key=self.sequence.index)
                v, family, scope = self.vertebrae(named)
                many = len(named) > 1
                text += ", " + self.pick("met.most_marked", _MET_MOST_MARKED, v=v, s="s" if many else "")
                mentions.append(self.mention("metastasis", POSITIVE, named, v, family, scope))
                written.update({lv: POSITIVE for lv in named})
            out.append(_Sentence(self.sentence(text), mentions))
            return out, written

        # Exhaustive region statement when a whole in-view region is positive.
        for region in ("lower thoracic spine", "lumbar spine", "mid thoracic spine", "upper thoracic spine"):
            members = region_levels(region, self.levels)
            remaining = [lv for lv in positives if lv not in written]
            if len(members) >= 3 and set(members) <= set(remaining) and self.chance(0.35):
                text = self.sentence(self.pick("met.region_all", _MET_REGION_EXHAUSTIVE, region=region))
                out.append(_Sentence(text, [self.mention("metastasis", POSITIVE, members, f"the {region}",
                                                         "region", "region", region=region)]))
                written.update({lv: POSITIVE for lv in members})

        remaining = [lv for lv in positives if lv not in written]
        omitted: list[str] = []
        hedged: list[str] = []
        stated: list[str] = []
        for level in remaining:
            roll = self.rng.random()
            if roll < 0.12:
                hedged.append(level)
            elif roll < 0.22 and len(remaining) > 1:
                omitted.append(level)
            else:
                stated.append(level)
        if not stated and not hedged and omitted:
            stated.append(omitted.pop())
        if stated:
            if self.chance(0.5):
                # One sentence per run of >= 3 contiguous levels (written as a range), one for the rest.
                long_runs = [run for run in self.runs(stated) if len(run) >= 3]
                singles = [lv for lv in stated if not any(lv in run for run in long_runs)]
                for group in [*long_runs, *([singles] if singles else [])]:
                    out.append(self.positive_metastasis(group))
            elif self.chance(0.5):
                out.append(self.positive_metastasis(stated))
            else:
                for level in stated:
                    out.append(self.positive_metastasis([level]))
            written.update({lv: POSITIVE for lv in stated})
        for level in hedged:
            out.append(self.hedged_metastasis([level]))
            written[level] = UNCERTAIN
        if self.chance(0.3):
            out.extend(self.region_negatives(written))
        if omitted:
            if self.chance(0.5):
                text = self.sentence(self.pick("met.further", _MET_FURTHER))
                out.append(_Sentence(text, [self.study_mention("metastasis", POSITIVE)]))
        elif self.chance(0.6):
            rest = [lv for lv in self.levels if lv not in written]
            if rest:
                out.append(self.closing_negative("metastasis", "met", _MET_NEGATIVE_OTHER, _MET_NEGATIVE_LEVELS, rest))
                written.update({lv: NEGATIVE for lv in rest})
        return out, written

    def closing_negative(self, finding: str, key: str, other: Sequence[str], by_level: Sequence[str],
                         rest: list[str]) -> _Sentence:
        """Negate ``finding`` at the levels not yet mentioned: "no other …" or naming them."""
        if self.chance(0.35):
            v, family, scope = self.vertebrae(rest)
            text = self.sentence(self.pick(f"{key}.negative_levels", by_level, v=v))
            return _Sentence(text, [self.mention(finding, NEGATIVE, rest, v, family, scope)])
        text = self.sentence(self.pick(f"{key}.negative_other", other))
        return _Sentence(text, [self.study_mention(finding, NEGATIVE, rest)])

    def positive_metastasis(self, levels: list[str]) -> _Sentence:
        v, family, scope = self.vertebrae(levels)
        many = len(levels) > 1
        text = self.pick("met.positive", _MET_POSITIVE, v=v, desc=self.met_descriptor(levels),
                         s="s" if many else "", es="es" if many else "is", are="are" if many else "is",
                         contain="contain" if many else "contains",
                         **{"is": "are" if many else "is"})
        return _Sentence(self.sentence(text), [self.mention("metastasis", POSITIVE, levels, v, family, scope)])

    def hedged_metastasis(self, levels: list[str]) -> _Sentence:
        v, family, scope = self.vertebrae(levels)
        hedge, text = self.pick_hedged("met.hedged", _MET_HEDGED, v=v, desc=self.met_descriptor(levels))
        return _Sentence(self.sentence(text),
                         [self.mention("metastasis", UNCERTAIN, levels, v, family, scope, hedge=hedge)])

    def region_negatives(self, written: dict[str, str]) -> list[_Sentence]:
        """"No suspicious lesion in the cervical spine" for whole in-view regions free of metastasis."""
        out = []
        coarse = self.chance(0.5)
        regions = (("cervical spine", "thoracic spine", "lumbar spine") if coarse else
                   ("cervical spine", "upper thoracic spine", "mid thoracic spine", "lower thoracic spine", "lumbar spine"))
        for region in regions:
            members = [lv for lv in region_levels(region, self.levels) if lv not in written]
            clear = not any(self.lesions[lv].get("metastasis") for lv in members)
            if clear and len(members) >= 3 and len(members) == len(region_levels(region, self.levels)):
                text = self.sentence(self.pick("met.region_negative", _MET_REGION_NEGATIVE, region=region))
                out.append(_Sentence(text, [self.mention("metastasis", NEGATIVE, members, f"the {region}", "region",
                                                         "region", region=region)]))
                written.update({lv: NEGATIVE for lv in members})
        return out

    def fracture_block(self, met_written: Mapping[str, str]) -> tuple[list[_Sentence], dict[str, str]]:
        positives = self.truth_levels("fracture")
        written: dict[str, str] = {}
        out: list[_Sentence] = []
        omitted = False
        for level in positives:
            loss = float(self.lesions[level].get("height_loss_fraction", 0.0))
            roll = self.rng.random()
            if roll < 0.08:
                omitted = True
                continue
            if roll < 0.18 and loss < 0.3:
                v, family = self.vertebra(level)
                hedge, text = self.pick_hedged("fracture.hedged", _FRACTURE_HEDGED, v=v)
                out.append(_Sentence(self.sentence(text), [self.mention("fracture", UNCERTAIN, [level], v, family,
                                                                        "level", hedge=hedge)]))
                written[level] = UNCERTAIN
                continue
            out.append(self.positive_fracture(level, loss, met_written.get(level)))
            written[level] = POSITIVE
        if not positives:
            if self.chance(0.65):
                text = self.sentence(self.pick("fracture.negative_all", _FRACTURE_NEGATIVE_ALL))
                out.append(_Sentence(text, [self.study_mention("fracture", NEGATIVE, self.levels)]))
                written.update({lv: NEGATIVE for lv in self.levels})
        elif not omitted and self.chance(0.45):
            rest = [lv for lv in self.levels if lv not in written]
            if rest:
                out.append(self.closing_negative("fracture", "fracture", _FRACTURE_NEGATIVE_OTHER,
                                                 _FRACTURE_NEGATIVE_LEVELS, rest))
                written.update({lv: NEGATIVE for lv in rest})
        return out, written

    def positive_fracture(self, level: str, loss: float, met_status: str | None) -> _Sentence:
        """A fracture sentence.

        "pathological" also states the metastasis, so it is written only where the metastasis is
        written alike (and, with truth ``details``, only for a fracture through a metastasis);
        "osteoporotic" only for a level without metastasis. Shape and marrow oedema come from the
        truth ``details`` when present.
        """
        details = self.details[level]
        v, family = self.vertebra(level)
        pct = int(round(max(loss, 0.1) * 100 / 5.0) * 5)
        genant = 1 if loss < 0.25 else (2 if loss <= 0.4 else 3)
        pathological = details.get("pathological_fracture", met_status == POSITIVE)
        path = ""
        if pathological and met_status == POSITIVE and self.chance(0.6):
            path = "pathological "
        elif pathological and met_status == UNCERTAIN and self.chance(0.5):
            path = "? pathological "
        elif not self.lesions[level].get("metastasis") and "pathological_fracture" in details and self.chance(0.3):
            path = self.choose(["osteoporotic ", "benign-appearing "])
        kind = details.get("fracture_type")
        if loss > 0.7 and self.chance(0.5):
            text = self.pick("fracture.plana", _FRACTURE_PLANA, v=v)
        elif kind in _FRACTURE_TYPED and self.chance(0.5):
            text = self.pick(f"fracture.{kind}", _FRACTURE_TYPED[kind], v=v, path=path)
        else:
            text = self.pick("fracture.positive", _FRACTURE_POSITIVE, v=v, pct=pct, genant=genant, path=path)
        if "fracture_oedema" in details and self.chance(0.4):
            text += self.pick("fracture.age", _FRACTURE_AGE[bool(details["fracture_oedema"])])
        mentions = [self.mention("fracture", POSITIVE, [level], v, family, "level", height_loss_percent=pct)]
        if "pathological" in path and path in text:
            status = POSITIVE if met_status == POSITIVE else UNCERTAIN
            mentions.append(self.mention("metastasis", status, [level], v, family, "level",
                                         hedge=None if status == POSITIVE else "possible"))
        return _Sentence(self.sentence(text), mentions)

    def cord_block(self) -> tuple[list[_Sentence], dict[str, str]]:
        written: dict[str, str] = {}
        out: list[_Sentence] = []
        for level in self.levels:
            grade = self.bilsky[level]
            compressed = bool(self.lesions[level].get("cord_compression"))
            if grade == "0" and not compressed:
                continue
            below_conus = level_order(level) >= level_order("L2") and level[0] in "LS"
            cc = self.choose(_CORD_WORDS_CAUDA if below_conus else _CORD_WORDS_CORD)
            state_grade = grade != "0" and self.chance(0.7)
            bilsky = self.pick("cord.bilsky_form", _BILSKY_FORMS, g=grade) if state_grade else ""
            v, family = self.vertebra(level)
            detail = {"bilsky": grade} if state_grade else {}
            mentions: list[Mention] = []
            if compressed:
                if grade != "0" and self.chance(0.1):
                    hedge, text = self.pick_hedged("cord.hedged", _CORD_HEDGED, v=v, cc=cc, bilsky=bilsky)
                    mentions.append(self.mention("cord_compression", UNCERTAIN, [level], v, family, "level", hedge=hedge))
                    written[level] = UNCERTAIN
                elif grade == "0":  # compression without epidural tumour (e.g. retropulsion)
                    text = self.pick("cord.positive_plain", ("{cc} at {v}", "there is {cc} at {v}"), v=v, cc=cc)
                    mentions.append(self.mention("cord_compression", POSITIVE, [level], v, family, "level"))
                    written[level] = POSITIVE
                else:
                    text = self.pick("cord.positive", _CORD_POSITIVE, v=v, cc=cc, bilsky=bilsky)
                    mentions.append(self.mention("cord_compression", POSITIVE, [level], v, family, "level"))
                    written[level] = POSITIVE
            else:
                text = self.pick("cord.epidural_no_cc", _EPIDURAL_NO_CC, v=v, cc=cc, bilsky=bilsky)
                mentions.append(self.mention("cord_compression", NEGATIVE, [level], v, family, "level"))
                written[level] = NEGATIVE
            if grade != "0":
                mentions.append(self.mention("epidural_disease", POSITIVE, [level], v, family, "level", **detail))
            out.append(_Sentence(self.sentence(text), mentions))
        if not written:
            if self.chance(0.7):
                text = self.sentence(self.pick("cord.negative_all", _CORD_NEGATIVE_ALL))
                out.append(_Sentence(text, [self.study_mention("cord_compression", NEGATIVE, self.levels)]))
                written.update({lv: NEGATIVE for lv in self.levels})
        elif self.chance(0.4):
            rest = [lv for lv in self.levels if lv not in written]
            if rest:
                text = self.sentence(self.pick("cord.negative_other", _CORD_NEGATIVE_OTHER))
                out.append(_Sentence(text, [self.study_mention("cord_compression", NEGATIVE, rest)]))
                written.update({lv: NEGATIVE for lv in rest})
        return out, written

    # -- degenerative ----------------------------------------------------------------------------
    def severity(self, grade: int | None) -> str:
        return "" if grade is None else self.choose(_SEVERITY_WORDS[grade])

    def disc_clauses(self, facts: _DiscFacts, cervical: bool,
                     skip: frozenset[str]) -> list[tuple[str, list[tuple[str, str, dict[str, Any]]]]]:
        """Positive noun-phrase clauses for one disc: ``[(text, [(finding, status, detail)])]``.

        ``skip``: findings already stated for several discs at once.
        """
        clauses: list[tuple[str, list[tuple[str, str, dict[str, Any]]]]] = []

        def add(key: str, variants: Sequence[str], findings: list[tuple[str, str, dict[str, Any]]], **slots: Any) -> None:
            if self.chance(0.1):  # omitted: the reader cannot know
                return
            clauses.append((self.pick(key, variants, **slots), findings))

        if facts.pfirrmann >= 3 and "disc_degeneration" not in skip:
            degree = facts.pfirrmann - 2
            variants = _DEGENERATION_CT if self.is_ct else _DEGENERATION[degree]
            words = {1: "mild", 2: "moderate", 3: "severe"}[degree]
            add(f"disc.degeneration{'' if self.is_ct else degree}", variants,
                [("disc_degeneration", POSITIVE, {} if self.is_ct else {"grade": words})])
        if facts.narrowing:
            add("disc.height_loss", _HEIGHT_LOSS, [("disc_height_loss", POSITIVE, {"grade": _SEVERITY[facts.narrowing]})],
                sev=self.severity(facts.narrowing))
        if facts.herniation_side in ("left", "right"):
            loc = self.choose([f"{facts.herniation_side} paracentral", f"{facts.herniation_side} subarticular"])
        elif facts.herniation_side == "central":
            loc = self.choose(["central", "central", "broad-based"])
        else:
            sides = [s for s, g in facts.foraminal.items() if g is None or g > 0]
            loc = self.choose(["central", "broad-based"] + [f"{s} paracentral" for s in ("left", "right")]
                              + [f"{s} foraminal" for s in sides])
        # Hedged herniation: mostly a true one described cautiously, sometimes a false alarm.
        if (facts.herniation and self.chance(0.1)) or (not facts.herniation and facts.pfirrmann >= 3
                                                       and self.chance(0.04)):
            hedge, text = self.pick_hedged("disc.herniation_hedged", _HERNIATION_HEDGED, loc=loc)
            clauses.append((text, [("herniation", UNCERTAIN, {"hedge": hedge})]))
        elif facts.herniation:
            kind = facts.herniation_type or self.choose(["protrusion", "extrusion", "herniation"])
            add("disc.herniation", _HERNIATION,
                [("herniation", POSITIVE, {"herniation_type": kind, "location": loc})], loc=loc, kind=kind)
        elif facts.pfirrmann >= 3 and self.chance(0.5):
            add("disc.bulge_cervical" if cervical else "disc.bulge", _BULGE_CERVICAL if cervical else _BULGE,
                [("disc_bulge", POSITIVE, {})])
        if facts.canal:
            add("disc.canal", _CANAL, [("canal_stenosis", POSITIVE, {"grade": _SEVERITY[facts.canal]})],
                sev=self.severity(facts.canal))
        self.sided_clauses(clauses, "foraminal", _FORAMINAL, facts.foraminal)
        if facts.subarticular is not None:
            self.sided_clauses(clauses, "subarticular", _SUBARTICULAR, facts.subarticular, root=disc_levels(facts.name)[1])
        if facts.spondylolisthesis:
            add("disc.listhesis", _LISTHESIS, [("spondylolisthesis", POSITIVE, {})])
        if facts.marrow_change and not self.is_ct:
            add(f"disc.modic{facts.modic_type or ''}", _MODIC[facts.modic_type],
                [("endplate_marrow_change", POSITIVE, {} if facts.modic_type is None else {"modic": facts.modic_type})])
        if facts.endplate_defect:
            add("disc.endplate_defect", _ENDPLATE_DEFECT, [("endplate_defect", POSITIVE, {})])
        return clauses

    def sided_clauses(self, clauses: list, name: str, variants: Sequence[str], grades: Mapping[str, int | None],
                      root: str | None = None) -> None:
        """Left/right clauses: "moderate bilateral …" when equal, else one clause per side."""
        present = {side: g for side, g in grades.items() if g is None or g > 0}
        if not present or self.chance(0.1):
            return
        finding = f"{name}_stenosis"

        def detail(grade: int | None) -> dict[str, Any]:
            return {} if grade is None else {"grade": _SEVERITY[grade]}

        if len(present) == 2 and present["left"] == present["right"]:
            grade = present["left"]
            text = self.pick(f"disc.{name}", variants, sev=self.severity(grade), side=" bilateral")
            findings = [(f"{finding}_left", POSITIVE, detail(grade)), (f"{finding}_right", POSITIVE, detail(grade))]
            clauses.append((text.strip(), findings))
            return
        for side, grade in present.items():
            sev = self.severity(grade)
            side_word = self.choose([f" {side}", f" {side}-sided"])
            text = self.pick(f"disc.{name}", variants, sev=sev, side=side_word).strip()
            if root and self.chance(0.25):
                text += self.pick("disc.nerve_root", _NERVE_ROOT, side=f"{side} ", root=root)
            clauses.append((text, [(f"{finding}_{side}", POSITIVE, detail(grade))]))

    def disc_negations(self, facts: _DiscFacts, stated: set[str]) -> list[tuple[str, list[str], str]]:
        """Negation phrases for truth-negative findings: ``[(noun or full phrase, findings, kind)]``.

        ``kind`` is ``"noun"`` (to be wrapped in a negation form) or ``"statement"``.
        """
        out: list[tuple[str, list[str], str]] = []
        covered: set[str] = set(stated)
        order = list(range(len(_DISC_NEGATION_GROUPS)))
        self.rng.shuffle(order)
        for index in order:
            findings, noun, statements = _DISC_NEGATION_GROUPS[index]
            if covered & set(findings) or self.chance(0.45):
                continue
            if facts.subarticular is None and any(f.startswith("subarticular") for f in findings):
                continue
            grades = [facts.truth_grade(f) for f in findings]
            if any(g is None or g > 0 for g in grades):
                continue
            if statements and self.chance(0.4):
                k = int(self.rng.integers(len(statements)))
                self.templates.append(f"disc.negation_statement{index}#{k}")
                out.append((self.spell(statements[k]), list(findings), "statement"))
            else:
                out.append((noun, list(findings), "noun"))
            covered |= set(findings)
        return out

    def negation_text(self, noun: str, trailing: bool) -> str:
        if trailing and self.chance(0.5):
            return self.pick("negation.without", ("without {b}", "with no {b}"), b=noun)
        return self.pick("negation.form", _NEGATION_FORMS, b=noun)

    def disc_sentence(self, facts: _DiscFacts, header: bool, skip: frozenset[str] = frozenset()) -> _Sentence | None:
        """All that is said about one disc, as a prose sentence or a ``"L4-L5: …"`` line."""
        cervical = facts.name.startswith("C")
        clauses = self.disc_clauses(facts, cervical, skip)
        stated = {f for _, findings in clauses for f, _, _ in findings} | set(skip)
        negations = self.disc_negations(facts, stated)
        if header:
            level_text, family = self.disc_token(facts.name)
        else:
            level_text, family = self.disc(facts.name)
        findings: list[tuple[str, str, dict[str, Any]]] = [f for _, fs in clauses for f in fs]
        if not clauses and not negations:
            if facts.abnormal or self.chance(0.3):
                return None
            body = self.pick("disc.normal", _NORMAL_DISC)
            findings = [(f, NEGATIVE, {"grade": "none"}) for f in DISC_FINDINGS
                        if f != "disc_bulge" and (facts.subarticular is not None or not f.startswith("subarticular"))]
            findings.append(("disc_bulge", NEGATIVE, {}))
            text = f"{level_text}: {body[0].upper()}{body[1:]}." if header else self.sentence(
                self.pick("disc.normal_prose", ("{d} is {n}", "at {d}, {n}", "{d}: {n}"), d=level_text, n=body))
        else:
            positive = self.join([c for c, _ in clauses]) if clauses else ""
            negative_parts = []
            for index, (phrase, neg_findings, kind) in enumerate(negations):
                significant = False
                if kind == "noun":
                    # "without …" only continues a prose sentence; header lines start a new sentence.
                    phrase = self.negation_text(phrase, trailing=bool(positive) and index == 0 and not header)
                    significant = "significant" in phrase
                negative_parts.append(phrase)
                for f in neg_findings:
                    findings.append((f, NEGATIVE, {"grade": "not_significant" if significant else "none"}))
            negative = "; ".join(negative_parts)
            if header:
                pieces = [p for p in (positive, negative) if p]
                text = f"{level_text}: " + ". ".join(p[0].upper() + p[1:] for p in pieces) + "."
            elif positive:
                lead = self.pick("disc.lead", ("at {d} there is {p}", "{d} demonstrates {p}", "{d}: {p}",
                                               "there is {p} at {d}", "{d} shows {p}"), d=level_text, p=positive)
                text = self.sentence(lead + (f", {negative}" if negative else ""))
            else:
                text = self.sentence(self.pick("disc.negative_lead", ("at {d}, {n}", "{d}: {n}", "{n} at {d}"),
                                               d=level_text, n=negative))
        scope_template = self.templates[-1]
        mentions = [Mention(finding=f, status=s, scope="level", levels=(facts.name,), level_text=level_text,
                            notation=family, template=scope_template, hedge=d.get("hedge"),
                            detail={k: v for k, v in d.items() if k != "hedge"}) for f, s, d in findings]
        return _Sentence(text, mentions, line=header)

    def listhesis_sentence(self, facts: _DiscFacts) -> _Sentence:
        upper, lower = disc_levels(facts.name)
        text = self.sentence(self.pick("disc.listhesis_on", _LISTHESIS_ON, upper=upper, lower=lower))
        return _Sentence(text, [self.mention("spondylolisthesis", POSITIVE, [facts.name], f"{upper} on {lower}",
                                             "listhesis_on", "level")])

    def curvature(self, anatomy: Mapping[str, Any]) -> list[tuple[str, tuple[str, ...], float]]:
        """Curvature statements the anatomy supports: ``(template key, variants, degrees)``.

        Normal ranges used: lumbar lordosis 30–70°, cervical lordosis ≥ 5°, thoracic kyphosis ≤ 55°,
        scoliosis < 8° (or ``lordosis_scale`` ≥ 0.6 where only that is given). No convexity side
        is claimed: the truth's sign convention is not part of the contract.
        """
        out = []
        scoliosis = abs(float(anatomy.get("scoliosis_deg") or 0.0))
        if scoliosis > 8:
            out.append(("align.scoliosis", ("mild scoliosis", "a scoliotic curvature of the spine",
                                            "scoliosis of about {d} degrees"), scoliosis))
        lumbar = anatomy.get("lumbar_lordosis_deg")
        cervical = anatomy.get("cervical_lordosis_deg")
        kyphosis = anatomy.get("thoracic_kyphosis_deg")
        if lumbar is not None and self.fov in ("lumbar", "whole"):
            if float(lumbar) < 30:
                out.append(("align.lumbar_flat", ("straightening of the lumbar lordosis",
                                                  "loss of the normal lumbar lordosis"), float(lumbar)))
            elif float(lumbar) > 70:
                out.append(("align.lumbar_deep", ("accentuated lumbar lordosis",), float(lumbar)))
        if cervical is not None and self.fov in ("cervical", "whole") and float(cervical) < 5:
            out.append(("align.cervical_flat", ("loss of the normal cervical lordosis",
                                                "straightening of the cervical spine"), float(cervical)))
        if kyphosis is not None and self.fov in ("thoracic", "whole") and float(kyphosis) > 55:
            out.append(("align.kyphosis", ("accentuated thoracic kyphosis",
                                           "increased thoracic kyphosis of about {d} degrees"), float(kyphosis)))
        scale = anatomy.get("lordosis_scale")
        if lumbar is None and scale is not None and float(scale) < 0.6 and self.fov in ("lumbar", "cervical"):
            out.append(("align.lordosis", ("straightening of the normal lordosis",
                                           "loss of the normal lordotic curve"), float(scale)))
        return out

    def alignment_block(self) -> list[_Sentence]:
        anatomy = self.truth.get("anatomy") or {}
        out: list[_Sentence] = []
        parts = [self.pick(key, variants, d=int(round(value))) for key, variants, value in self.curvature(anatomy)]
        listheses = [d for d in self.discs if d.spondylolisthesis]
        if parts:
            out.append(_Sentence(self.sentence(self.join(parts)), []))
        if listheses:
            for facts in listheses:
                out.append(self.listhesis_sentence(facts))
        elif self.discs and self.chance(0.7):
            variants = (("alignment is otherwise maintained", "no spondylolisthesis") if parts else
                        ("alignment is normal", "normal vertebral alignment", "no spondylolisthesis"))
            text = self.sentence(self.pick("align.normal" if not parts else "align.otherwise", variants))
            out.append(_Sentence(text, [self.study_mention("spondylolisthesis", NEGATIVE,
                                                           [d.name for d in self.discs])]))
        return out

    def degenerative_block(self, header_lines: bool) -> list[_Sentence]:
        """Per-disc statements (lumbar/cervical studies) or a summary (thoracic/whole spine)."""
        out: list[_Sentence] = []
        if not self.discs:
            return out
        detailed = self.fov in ("lumbar", "cervical")
        if detailed:
            focus = [d for d in self.discs if d.name[0] == ("L" if self.fov == "lumbar" else "C")
                     or d.name in ("T12/L1", "T13/L1", "C7/T1")]
            rest_negative = self.chance(0.4)
            skip: frozenset[str] = frozenset()
            degenerate = [d.name for d in focus if d.pfirrmann >= 3]
            if not header_lines and not self.is_ct and len(degenerate) >= 2 and self.chance(0.4):
                d_text, family, scope = self.discs_text(degenerate)
                text = self.pick("disc.grouped_degeneration", (
                    "disc desiccation at {d}", "degenerative disc disease at {d}", "loss of normal disc signal at {d}",
                    "there is disc degeneration at {d}"), d=d_text)
                out.append(_Sentence(self.sentence(text), [self.mention("disc_degeneration", POSITIVE, degenerate,
                                                                        d_text, family, scope)]))
                skip = frozenset({"disc_degeneration"})
            for facts in focus:
                if not header_lines and not facts.abnormal and rest_negative:
                    continue
                sentence = self.disc_sentence(facts, header=header_lines, skip=skip)
                if sentence is not None:
                    out.append(sentence)
            if not header_lines and rest_negative:
                normal = [d.name for d in focus if not d.abnormal]
                mentioned = {m.levels[0] for s in out for m in s.mentions}
                normal = [d for d in normal if d not in mentioned]
                if normal:
                    findings = ("disc_degeneration", "disc_height_loss", "herniation", "canal_stenosis",
                                "foraminal_stenosis_left", "foraminal_stenosis_right")
                    if self.chance(0.5):
                        d_text, family, scope = self.discs_text(normal)
                        text = self.sentence(self.pick("disc.named_normal", (
                            "normal appearances at {d}", "the discs at {d} are normal", "{d}: no abnormality"),
                            d=d_text))
                        mentions = [self.mention(f, NEGATIVE, normal, d_text, family, scope) for f in findings]
                    else:
                        text = self.sentence(self.pick("disc.remaining_normal", (
                            "the remaining discs are normal", "other levels are unremarkable",
                            "no abnormality at the other disc levels",
                            "the other discs are of normal height and signal")))
                        mentions = [self.study_mention(f, NEGATIVE, normal) for f in findings]
                    out.append(_Sentence(text, mentions))
            return out
        degenerate = [d for d in self.discs if d.pfirrmann >= 3]
        if degenerate and self.chance(0.75):
            worst = max(degenerate, key=lambda d: (d.pfirrmann, d.canal, d.narrowing))
            d_text, family = self.disc(worst.name)
            text = self.pick("disc.summary", ("multilevel degenerative disc disease, most marked at {d}",
                                              "degenerative change throughout, worst at {d}",
                                              "multilevel spondylosis, most pronounced at {d}"), d=d_text)
            mentions = [self.study_mention("disc_degeneration", POSITIVE),
                        self.mention("disc_degeneration", POSITIVE, [worst.name], d_text, family, "level")]
            out.append(_Sentence(self.sentence(text), mentions))
        elif not degenerate and self.chance(0.5):
            text = self.sentence(self.pick("disc.summary_negative", ("no significant degenerative disc disease",
                                                                     "the discs are well preserved")))
            out.append(_Sentence(text, [self.study_mention("disc_degeneration", NEGATIVE, [d.name for d in self.discs])]))
        for facts in self.discs:
            if facts.herniation or facts.canal >= 2:
                sentence = self.disc_sentence(facts, header=False)
                if sentence is not None and self.chance(0.8):
                    out.append(sentence)
        return out

    # -- anatomy, history, technique, incidental -------------------------------------------------
    def transitional_sentence(self) -> tuple[_Sentence | None, str | None]:
        """State transitional anatomy whenever the extra vertebra is imaged (else it cannot be seen)."""
        if self.transitional not in (None, *self.levels):
            return None, "unknown"
        if self.transitional == "L6":
            text = self.pick("anatomy.l6", (
                "there is a transitional lumbosacral vertebra, designated L6 for the purposes of this report",
                "six lumbar-type vertebrae are present; the lowest is labelled L6",
                "transitional anatomy with a lumbarized S1 segment, numbered here as L6",
                "segmentation anomaly: six non-rib-bearing lumbar vertebrae, the last termed L6"))
            return _Sentence(self.sentence(text), []), "L6"
        if self.transitional == "T13":
            text = self.pick("anatomy.t13", (
                "there are 13 rib-bearing thoracic vertebrae; the additional segment is designated T13",
                "thirteen thoracic-type vertebrae are present (T13 assigned)",
                "supernumerary rib-bearing vertebra, labelled T13"))
            return _Sentence(self.sentence(text), []), "T13"
        variants = {
            "lumbar": ("normal segmentation is assumed, with five lumbar vertebrae",
                       "there are five lumbar-type vertebrae"),
            "thoracic": ("conventional segmentation; the lowest rib-bearing vertebra is T12",),
            "whole": ("normal segmentation is assumed, with five lumbar vertebrae",
                      "conventional segmentation; the lowest rib-bearing vertebra is T12",
                      "there are five lumbar-type vertebrae"),
        }.get(self.fov)
        if variants and self.chance(0.3):  # a cervical study cannot count the lumbar vertebrae
            text = self.pick(f"anatomy.normal_{self.fov}", variants)
            return _Sentence(self.sentence(text), []), None
        return None, "unknown"

    def history_text(self, cancer: bool, fracture: bool) -> str:
        side = self.choose(["left", "right"])
        if cancer or self.chance(0.2):
            return self.pick("history.cancer", _HISTORY_CANCER, primary=self.choose(_PRIMARIES))
        if fracture and self.chance(0.6):
            return self.pick("history.trauma", _HISTORY_TRAUMA)
        if self.fov == "cervical":
            return self.pick("history.cervical", _HISTORY_CERVICAL, side=side)
        return self.pick("history.degenerative", _HISTORY_DEGENERATIVE, side=side)

    def technique_text(self) -> str:
        names = []
        for kind in dict.fromkeys(self.kinds):
            if kind in ("localizer", "ct_scout") and self.chance(0.7):
                continue
            if kind in _KIND_NAMES:
                names.append(self.choose(_KIND_NAMES[kind]))
        modality = "CT" if self.is_ct else "MRI"
        region = _FOV_NAMES.get(self.fov, "spine")
        listing = self.join(names) if names else "standard protocol"
        text = self.pick("technique", ("{listing}", "multiplanar multisequence {m} of the {r}: {listing}",
                                       "{m} {r}. Sequences: {listing}", "{listing} images were obtained"),
                         listing=listing, m=modality, r=region)
        sentences = [self.sentence(text)]
        if "sag_t1_post" in self.kinds:
            sentences.append(self.sentence(self.pick("technique.contrast", (
                "gadolinium was administered", "post-contrast imaging after IV gadolinium"))))
        elif not self.is_ct and self.chance(0.4):
            sentences.append(self.sentence(self.pick("technique.no_contrast", ("no intravenous contrast",
                                                                               "non-contrast study"))))
        return " ".join(sentences)

    def comparison_text(self) -> str:
        year = int(self.rng.integers(2019, 2026))
        month, day = int(self.rng.integers(1, 13)), int(self.rng.integers(1, 29))
        date = f"{day:02d}/{month:02d}/{year}" if self.dialect == "uk" else f"{month:02d}/{day:02d}/{year}"
        return self.sentence(self.pick("comparison", _COMPARISON, date=date))

    def incidental_sentences(self) -> list[_Sentence]:
        keys = ["paraspinal", "kidney", "aorta"]
        if self.fov in ("lumbar", "whole"):
            keys += ["sij", "tarlov", "facet"]
        if self.conus and self.fov != "cervical":
            keys.append("conus")
        if self.fov in ("cervical", "whole"):
            keys += ["thyroid", "craniocervical"]
        if self.fov in ("thoracic", "whole"):
            keys.append("pleural")
        count = int(self.rng.integers(0, 4))
        chosen = [keys[i] for i in self.rng.choice(len(keys), size=min(count, len(keys)), replace=False)]
        out = []
        for key in chosen:
            text = self.pick(f"incidental.{key}", _INCIDENTAL[key], conus=self.conus,
                             side=self.choose(["left", "right"]))
            out.append(_Sentence(self.sentence(text), []))
        return out

    # -- impression -----------------------------------------------------------------------------
    def impression(self, met: Mapping[str, str], fracture: Mapping[str, str], cord: Mapping[str, str],
                   findings: Sequence[_Sentence]) -> list[_Sentence]:
        """Restate the key findings (consistently with the findings section) in new words."""
        out: list[_Sentence] = []
        met_pos = [lv for lv, s in met.items() if s == POSITIVE]
        study_pos = any(m.finding == "metastasis" and m.scope == "study" and m.status == POSITIVE and not m.levels
                        for s in findings for m in s.mentions)
        if study_pos and self.chance(0.8):
            text = self.pick("impression.met_study", ("widespread spinal metastases", "diffuse osseous metastatic disease",
                                                      "extensive metastatic disease in the spine"))
            out.append(_Sentence(self.sentence(text), [self.study_mention("metastasis", POSITIVE)]))
        elif met_pos and self.chance(0.8):
            v, family, scope = self.vertebrae(met_pos)
            many = len(met_pos) > 1
            text = self.pick("impression.met", ("metastas{es} at {v}", "spinal metastatic disease involving {v}",
                                                "{v} metastas{es}", "osseous secondar{ies}: {v}"),
                             v=v, es="es" if many else "is", ies="ies" if many else "y")
            out.append(_Sentence(self.sentence(text), [self.mention("metastasis", POSITIVE, met_pos, v, family, scope)]))
        elif met and all(s == NEGATIVE for s in met.values()) and len(met) == len(self.levels) and self.chance(0.7):
            text = self.pick("impression.met_negative", ("no evidence of spinal metastases", "no metastatic disease",
                                                         "no suspicious bone lesion"))
            out.append(_Sentence(self.sentence(text), [self.study_mention("metastasis", NEGATIVE, self.levels)]))
        frac_pos = [lv for lv, s in fracture.items() if s == POSITIVE]
        if frac_pos and self.chance(0.8):
            v, family, scope = self.vertebrae(frac_pos)
            text = self.pick("impression.fracture", ("compression fracture{s} of {v}", "vertebral collapse at {v}",
                                                     "{v} height loss"), v=v, s="s" if len(frac_pos) > 1 else "")
            out.append(_Sentence(self.sentence(text), [self.mention("fracture", POSITIVE, frac_pos, v, family, scope)]))
        cord_pos = [lv for lv, s in cord.items() if s == POSITIVE]
        if cord_pos:
            v, family, scope = self.vertebrae(cord_pos)
            text = self.pick("impression.cord", ("cord compression at {v} - urgent discussion recommended",
                                                 "metastatic spinal cord compression at {v}",
                                                 "MSCC at {v}; findings telephoned to the referring team"), v=v)
            out.append(_Sentence(self.sentence(text), [self.mention("cord_compression", POSITIVE, cord_pos, v, family,
                                                                    scope)]))
        elif cord and all(s == NEGATIVE for s in cord.values()) and len(cord) == len(self.levels) and self.chance(0.7):
            text = self.pick("impression.cord_negative", ("no cord compression", "no MSCC", "no spinal cord compression"))
            out.append(_Sentence(self.sentence(text), [self.study_mention("cord_compression", NEGATIVE, self.levels)]))
        worst_canal = max(self.discs, key=lambda d: d.canal, default=None)
        if worst_canal is not None and worst_canal.canal >= 2 and self.chance(0.7):
            d, family = self.disc(worst_canal.name)
            sev = self.severity(worst_canal.canal)
            text = self.pick("impression.canal", ("{sev} canal stenosis at {d}", "{d}: {sev} spinal canal stenosis",
                                                  "{sev} central stenosis at {d}"), sev=sev, d=d)
            out.append(_Sentence(self.sentence(text), [self.mention(
                "canal_stenosis", POSITIVE, [worst_canal.name], d, family, "level",
                grade=_SEVERITY[worst_canal.canal])]))
        if not out or self.chance(0.3):
            text = self.pick("impression.other", ("no other significant abnormality", "otherwise unremarkable study",
                                                  "degenerative changes as described", "see findings above"))
            out.append(_Sentence(self.sentence(text), []))
        return out

    # -- proforma lines --------------------------------------------------------------------------
    def proforma_lines(self, met: Mapping[str, str], fracture: Mapping[str, str], cord: Mapping[str, str],
                       blocks: Sequence[Sequence[_Sentence]]) -> list[_Sentence]:
        """MSCC-proforma ``Key: value`` lines restating the cancer findings (values from the prose)."""
        out: list[_Sentence] = []
        for finding, written, key_variants in (
            ("metastasis", met, ("Metastases", "Bone metastases", "Osseous metastatic disease")),
            ("fracture", fracture, ("Pathological fracture / collapse", "Vertebral collapse", "Fracture")),
            ("cord_compression", cord, ("Cord compression", "MSCC", "Spinal cord compression")),
        ):
            positives = [lv for lv, s in written.items() if s == POSITIVE]
            key = self.pick(f"proforma.{finding}", key_variants)
            if positives:
                v, family, scope = self.vertebrae(positives)
                value = self.pick("proforma.yes", ("Yes - {v}", "{v}", "present at {v}"), v=v)
                out.append(_Sentence(f"{key}: {value}", [self.mention(finding, POSITIVE, positives, v, family, scope)],
                                     line=True))
            elif any(m.finding == finding and m.status == POSITIVE and m.scope == "study"
                     for block in blocks for sentence in block for m in sentence.mentions):
                value = self.pick("proforma.widespread", ("Yes - widespread", "Yes, multilevel (see above)"))
                out.append(_Sentence(f"{key}: {value}", [self.study_mention(finding, POSITIVE)], line=True))
            elif written and len(written) == len(self.levels) and all(s == NEGATIVE for s in written.values()):
                value = self.pick("proforma.no", ("No", "None", "Not identified", "Negative"))
                out.append(_Sentence(f"{key}: {value}", [self.study_mention(finding, NEGATIVE, self.levels)], line=True))
        return out

    # -- assembly ---------------------------------------------------------------------------------
    def compose(self) -> ReportText:
        cancer_truth = bool(self.truth_levels("metastasis") or self.truth_levels("cord_compression"))
        fracture_truth = bool(self.truth_levels("fracture"))
        titles = _SECTION_TITLES[self.style]

        transitional_sentence, transitional = self.transitional_sentence()
        alignment = self.alignment_block()
        met_sentences, met_written = self.metastasis_block()
        fracture_sentences, fracture_written = self.fracture_block(met_written)
        cord_sentences, cord_written = self.cord_block()
        header_lines = self.style in ("structured", "terse") and self.chance(0.7)
        degenerative = self.degenerative_block(header_lines)
        incidental = self.incidental_sentences()

        cancer_first = cancer_truth or self.fov in ("whole", "thoracic")
        cancer_block = met_sentences + fracture_sentences + cord_sentences
        paragraphs = [([transitional_sentence] if transitional_sentence else []) + alignment]
        if cancer_first:
            paragraphs += [cancer_block, degenerative]
        else:
            paragraphs += [fracture_sentences, degenerative, met_sentences + cord_sentences]
        paragraphs.append(incidental)
        paragraphs = [p for p in paragraphs if p]
        if self.style == "proforma":
            paragraphs.append(self.proforma_lines(met_written, fracture_written, cord_written, paragraphs))
        finding_sentences = [s for p in paragraphs for s in p]
        impression = self.impression(met_written, fracture_written, cord_written, finding_sentences)

        history = self.sentence(self.history_text(cancer_truth, fracture_truth))
        technique = self.technique_text()
        comparison = self.comparison_text() if self.chance(0.7) else None

        text, mentions = self.render(titles, history, technique, comparison, paragraphs, impression)
        vertebra_labels, bilsky_labels, disc_labels, disc_grades, study_labels = labels_from_mentions(
            mentions, self.levels, [d.name for d in self.discs])
        return ReportText(
            text=text, mentions=tuple(mentions), vertebra_labels=vertebra_labels, bilsky_labels=bilsky_labels,
            disc_labels=disc_labels, disc_grades=disc_grades, study_labels=study_labels, transitional=transitional,
            templates=tuple(self.templates), notations=tuple(m.notation for m in mentions),
            style=self.style, dialect=self.dialect)

    def render(self, titles: Mapping[str, str], history: str, technique: str, comparison: str | None,
               paragraphs: Sequence[Sequence[_Sentence]], impression: Sequence[_Sentence]) -> tuple[str, list[Mention]]:
        """Lay the sections out in the style's format; mentions get their final sentence and section."""
        bullets = self.style == "terse"
        modality = "CT" if self.is_ct else self.choose(["MRI", "MR"])
        exam = f"{modality} {_FOV_NAMES.get(self.fov, 'spine')}"
        exam = exam.upper() if self.style == "structured" else exam

        def block(sentences: Sequence[_Sentence]) -> str:
            lines = []
            prose: list[str] = []
            for s in sentences:
                if bullets or s.line:
                    if prose:
                        lines.append(" ".join(prose))
                        prose = []
                    lines.append(("- " if bullets else "") + s.text)
                else:
                    prose.append(s.text)
            if prose:
                lines.append(" ".join(prose))
            return "\n".join(lines)

        numbered = self.style in ("structured", "proforma") or (self.style == "terse" and self.chance(0.5))
        if numbered:
            impression_text = "\n".join(f"{i}. {s.text}" for i, s in enumerate(impression, 1))
        else:
            impression_text = " ".join(s.text for s in impression)

        front = [("history", history), ("technique", technique)]
        if self.chance(0.3):
            front.reverse()
        if comparison is not None:
            front.append(("comparison", comparison))
        findings_text = "\n\n".join(block(p) for p in paragraphs)
        body = [("findings", findings_text), ("impression", impression_text)]
        if self.style == "prose" and self.chance(0.25):
            body.reverse()
        sections = front + body

        parts = [f"{titles['header']}: {exam}" if titles["header"] else exam]
        for name, content in sections:
            separator = "\n" if name in ("findings", "impression") or self.style == "structured" else " "
            parts.append(f"{titles[name]}:{separator}{content}")
        text = "\n\n".join(parts) + "\n"

        mentions: list[Mention] = []
        for section, sentences in (("findings", [s for p in paragraphs for s in p]), ("impression", impression)):
            for s in sentences:
                for m in s.mentions:
                    level_text = m.level_text
                    if level_text and level_text not in s.text:  # capitalised at the start of the sentence
                        level_text = level_text[0].upper() + level_text[1:]
                    mentions.append(Mention(**{**m.__dict__, "sentence": s.text, "section": section,
                                               "level_text": level_text}))
        return text, mentions
