"""Synthetic radiology reports: determinism, truth consistency, level notations, negation, variety."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest

from operators.core.gradings import CANCER_FINDINGS, rsna_severity_from_stenosis_grade
from operators.core.levels import RSNA_DISCS, discs_between, levels_with_transitional
from training.synthetic.report_text import (
    DISC_FINDINGS,
    NEGATIVE,
    Mention,
    POSITIVE,
    REGIONS,
    STYLES,
    UNCERTAIN,
    UNKNOWN,
    compose_report,
    labels_from_mentions,
    region_levels,
    write_report,
)

_FOV_RANGE = {"lumbar": ("T11", "S1"), "thoracic": ("C7", "L1"), "cervical": ("C1", "T2"), "whole": ("C1", "S1")}


def make_truth(seed: int) -> dict:
    """A small truth dict of the brief's schema (no images): random FOV, anatomy and pathology."""
    rng = np.random.default_rng(seed)
    fov = str(rng.choice(list(_FOV_RANGE)))
    transitional = [None, None, None, "L6", "T13"][int(rng.integers(5))]
    sequence = levels_with_transitional(thirteen_thoracic=transitional == "T13", six_lumbar=transitional == "L6")
    first, last = _FOV_RANGE[fov]
    levels = list(sequence[sequence.index(first) : sequence.index(last) + 1])
    pattern = str(rng.choice(["none", "none", "focal", "multiple", "diffuse"]))
    rate = {"none": 0.0, "focal": 0.08, "multiple": 0.3, "diffuse": 0.85}[pattern]
    start = int(rng.integers(len(levels)))  # lesions cluster around a random level, so runs occur
    vertebrae = []
    for index, level in enumerate(levels):
        near = abs(index - start) <= 3
        metastasis = bool(rng.random() < (rate * (2.0 if near else 0.6)))
        fracture = bool(rng.random() < (0.3 if metastasis else 0.04))
        compression = bool(metastasis and rng.random() < 0.2)
        bilsky = str(rng.choice(["1c", "2", "3"])) if compression else (
            str(rng.choice(["1a", "1b"])) if metastasis and rng.random() < 0.2 else "0")
        vertebra = {"level": level, "lesions": {
            "metastasis": metastasis, "metastasis_pattern": pattern if metastasis else "none",
            "fracture": fracture, "height_loss_fraction": float(rng.uniform(0.15, 0.8)) if fracture else 0.0,
            "cord_compression": compression, "epidural_bilsky": bilsky}}
        if rng.random() < 0.5:  # the optional details behind the labels, as the phantom gives them
            vertebra["details"] = {
                "fracture_type": str(rng.choice(["wedge", "biconcave", "crush"])) if fracture else "none",
                "pathological_fracture": fracture and metastasis and rng.random() < 0.8,
                "fracture_oedema": fracture and rng.random() < 0.5,
                "metastasis_sclerotic": metastasis and rng.random() < 0.3}
        vertebrae.append(vertebra)
    discs = []
    for name in discs_between(levels):
        # Exact 0..3 severities as the phantom samples them; gradings/RSNA derived the phantom's way.
        pfirrmann = int(rng.integers(1, 6))
        degenerate = pfirrmann >= 3

        def severity() -> int:
            return int(rng.choice(4, p=[0.5, 0.2, 0.2, 0.1])) if degenerate else 0

        canal, foraminal, subarticular = severity(), {"left": severity(), "right": severity()}, \
            {"left": severity(), "right": severity()}
        herniation = str(rng.choice(["none", "protrusion", "extrusion"], p=[0.7, 0.2, 0.1])) if degenerate else "none"
        modic = int(rng.choice(4, p=[0.85, 0.05, 0.07, 0.03]))
        gradings = {
            "pfirrmann": pfirrmann, "narrowing": int(rng.integers(0, 4)) if degenerate else 0,
            "central_canal_stenosis": canal, "spondylolisthesis": int(rng.random() < 0.05),
            "upper_endplate_defect": int(rng.random() < 0.1), "lower_endplate_defect": 0,
            "upper_marrow_change": int(modic > 0), "lower_marrow_change": 0,
            "foraminal_stenosis_left": int(foraminal["left"] >= 2), "foraminal_stenosis_right": int(foraminal["right"] >= 2),
            "herniation": int(herniation != "none")}
        disc = {"level": name, "centre_mm": [0.0, 0.0, 0.0], "gradings": gradings}
        if name in RSNA_DISCS:
            disc["rsna"] = {"spinal_canal_stenosis": rsna_severity_from_stenosis_grade(canal),
                            **{f"{side}_neural_foraminal_narrowing": rsna_severity_from_stenosis_grade(foraminal[side])
                               for side in ("left", "right")},
                            **{f"{side}_subarticular_stenosis": rsna_severity_from_stenosis_grade(subarticular[side])
                               for side in ("left", "right")}}
        if rng.random() < 0.5:  # the optional exact values behind the labels
            disc["details"] = {"foraminal_severity": foraminal, "subarticular_severity": subarticular,
                               "herniation_type": herniation, "herniation_side": str(rng.choice(["left", "central", "right"])),
                               "modic_upper": modic, "modic_lower": 0}
        discs.append(disc)
    kinds = [str(k) for k in rng.choice(["sag_t1", "sag_t2", "sag_stir", "ax_t2", "localizer", "dwi"],
                                         size=int(rng.integers(2, 6)), replace=False)]
    if rng.random() < 0.1:
        kinds = ["ct_axial", "ct_sag_reformat", "ct_scout"]
    return {
        "schema": "spine-map-synthetic-truth/1", "seed": seed, "study_instance_uid": f"2.25.{seed + 1}",
        "field_of_view": fov,
        "anatomy": {"transitional": transitional, "scoliosis_deg": float(rng.normal(0, 8)), "conus_level": "L1",
                    "lordosis_scale": float(rng.uniform(0.4, 1.4))},
        "series": [{"kind": k, "expected_role": k} for k in kinds],
        "vertebrae": vertebrae, "discs": discs, "bilsky": [],
    }


@pytest.fixture(scope="module")
def corpus() -> list[tuple[dict, object]]:
    """300 truths and their reports (about 2 s)."""
    return [(truth, compose_report(truth, np.random.default_rng(10_000 + seed)))
            for seed in range(300) for truth in [make_truth(seed)]]


# -- independent level-notation parsers, one per family ----------------------------------------
_ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
             "eleventh", "twelfth", "thirteenth"]
_SEGMENTS = {"cervical": "C", "thoracic": "T", "lumbar": "L", "sacral": "S"}
_VERT = r"[CTLS]\d{1,2}"
_DASH = r"[-–]"
_RANGE_PATTERNS = {
    "range_through": rf"^({_VERT}) through ({_VERT})$",
    "range_to": rf"^({_VERT}) to ({_VERT}) inclusive$",
    "range_dash": rf"^({_VERT}){_DASH}({_VERT})$",
    "range_from_to": rf"^all levels from ({_VERT}) to ({_VERT})$",
    "range_between": rf"^the levels between ({_VERT}) and ({_VERT}) inclusive$",
}
_DISC_PATTERNS = {
    "disc_slash": rf"\b({_VERT})/({_VERT})\b",
    "disc_slash_short": r"\b([CTL])(\d{1,2})/(\d{1,2})\b",
    "disc_dash": rf"\b({_VERT}){_DASH}({_VERT})\b",
    "disc_dash_short": rf"\b([CTL])(\d{{1,2}}){_DASH}(\d{{1,2}})\b",
    "disc_between": rf"the disc between ({_VERT}) and ({_VERT})",
    "listhesis_on": rf"^({_VERT}) on ({_VERT})$",
}


def _span(first: str, last: str, sequence: tuple[str, ...]) -> list[str]:
    return list(sequence[sequence.index(first) : sequence.index(last) + 1])


def parse_vertebrae(text: str, family: str, sequence: tuple[str, ...]) -> list[str]:
    """Levels a vertebra notation denotes, parsed without the generator's code."""
    if family == "vertebra":
        match = re.fullmatch(rf"(?:the )?({_VERT})(?: vertebral body| vertebra| body)?", text, re.IGNORECASE)
        return [match.group(1).upper()] if match else []
    if family == "ordinal":
        match = re.fullmatch(r"the (\w+) (cervical|thoracic|lumbar|sacral) (?:vertebra|vertebral body)", text,
                             re.IGNORECASE)
        return [f"{_SEGMENTS[match.group(2).lower()]}{_ORDINALS.index(match.group(1).lower()) + 1}"] if match else []
    if family in _RANGE_PATTERNS:
        match = re.match(_RANGE_PATTERNS[family], text, re.IGNORECASE)
        return _span(match.group(1).upper(), match.group(2).upper(), sequence) if match else []
    if family == "vertebra_list":
        levels: list[str] = []
        for item in re.split(r",\s*(?:and\s+)?|\s+and\s+", text):
            ranged = re.fullmatch(rf"({_VERT})(?: to | through |{_DASH})({_VERT})", item.strip())
            levels += _span(*ranged.groups(), sequence) if ranged else re.findall(rf"^{_VERT}$", item.strip())
        return levels
    if family == "region":
        region = re.fullmatch(r"the (.+)", text, re.IGNORECASE).group(1)
        return list(REGIONS[region])  # the caller intersects with the imaged levels
    raise AssertionError(f"unexpected vertebra notation {family}")


_ANY_DISC = rf"({_VERT})[/\-–](\d{{1,2}}|{_VERT})"


def _disc_tokens(text: str) -> list[str]:
    names = []
    for upper, lower in re.findall(_ANY_DISC, text):
        names.append(f"{upper}/{lower if lower[0].isalpha() else upper[0] + lower}")
    return names


def parse_disc(text: str, family: str, sequence: tuple[str, ...]) -> list[str]:
    """Discs a disc notation denotes, parsed without the generator's code."""
    if family == "disc_list":
        return _disc_tokens(text)
    if family == "disc_range":
        first, last = _disc_tokens(text)
        names = discs_between(sequence)
        return names[names.index(first) : names.index(last) + 1]
    match = re.search(_DISC_PATTERNS[family], text, re.IGNORECASE)
    if not match:
        return []
    if family.endswith("_short"):
        letter, upper, lower = match.groups()
        return [f"{letter}{upper}/{letter}{lower}"]
    return [f"{match.group(1)}/{match.group(2)}"]


# -- tests -------------------------------------------------------------------------------------


def test_deterministic_by_seed_and_write_report_matches_compose() -> None:
    truth = make_truth(7)
    first = compose_report(truth, np.random.default_rng(3))
    second = compose_report(truth, np.random.default_rng(3))
    assert first.text == second.text and first.mentions == second.mentions
    assert write_report(truth, np.random.default_rng(3)) == first.text
    assert compose_report(truth, np.random.default_rng(4)).text != first.text
    stored = json.loads(json.dumps(first.to_json()))
    assert stored["text"] == first.text and len(stored["mentions"]) == len(first.mentions)
    assert stored["vertebra_labels"] == first.vertebra_labels


def test_mentions_are_in_the_text_and_consistent_with_truth(corpus) -> None:
    for truth, report in corpus:
        lesions = {v["level"]: v["lesions"] for v in truth["vertebrae"]}
        for mention in report.mentions:
            assert mention.sentence in report.text
            assert mention.level_text in mention.sentence
            if mention.finding in CANCER_FINDINGS:
                for level in mention.levels:
                    if mention.status == POSITIVE:
                        assert lesions[level][mention.finding], (level, mention.sentence)
                    elif mention.status == NEGATIVE:
                        assert not lesions[level][mention.finding], (level, mention.sentence)
        for level, labels in report.vertebra_labels.items():
            for finding, label in labels.items():
                truth_value = bool(lesions[level][finding])
                assert label == UNKNOWN or (label == POSITIVE) == truth_value, (level, finding, report.text)


_SEVERITY_WORD = {1: "mild", 2: "moderate", 3: "severe"}


def disc_truth(disc: dict) -> dict[str, tuple[bool, str | None]]:
    """Per disc finding: (present, severity word or None) from the truth.

    With ``details`` the exact severities decide; without, RSNA Moderate/Severe decide where given,
    RSNA Normal/Mild splits into none/mild by the SpineNet grading, and a subarticular Normal/Mild
    counts as absent.
    """
    g, rsna, details = disc["gradings"], disc.get("rsna", {}), disc.get("details")

    def graded(rsna_label: str | None, grade: int) -> tuple[bool, str | None]:
        if rsna_label in ("Moderate", "Severe"):
            return True, rsna_label.lower()
        if rsna_label == "Normal/Mild":
            grade = min(grade, 1)
        return grade > 0, _SEVERITY_WORD.get(grade)

    out = {
        "disc_degeneration": (g["pfirrmann"] >= 3, None),
        "disc_height_loss": graded(None, g["narrowing"]),
        "herniation": (bool(g["herniation"]), None),
        "canal_stenosis": graded(rsna.get("spinal_canal_stenosis"), g["central_canal_stenosis"]),
        "spondylolisthesis": (bool(g["spondylolisthesis"]), None),
        "endplate_marrow_change": (bool(g["upper_marrow_change"] or g["lower_marrow_change"]), None),
        "endplate_defect": (bool(g["upper_endplate_defect"] or g["lower_endplate_defect"]), None),
    }
    for side in ("left", "right"):
        if details:
            out[f"foraminal_stenosis_{side}"] = graded(None, details["foraminal_severity"][side])
            out[f"subarticular_stenosis_{side}"] = graded(None, details["subarticular_severity"][side])
            continue
        label = rsna.get(f"{side}_neural_foraminal_narrowing")
        binary = g[f"foraminal_stenosis_{side}"]
        out[f"foraminal_stenosis_{side}"] = graded(label, binary) if label else (bool(binary), None)
        out[f"subarticular_stenosis_{side}"] = graded(rsna.get(f"{side}_subarticular_stenosis"), 0)
    return out


def test_disc_statements_match_truth_and_grades(corpus) -> None:
    graded = 0
    for truth, report in corpus:
        truths = {d["level"]: disc_truth(d) for d in truth["discs"]}
        for mention in report.mentions:
            if mention.finding not in DISC_FINDINGS or mention.finding == "disc_bulge":
                continue
            for disc in mention.levels:
                present, grade = truths[disc][mention.finding]
                if mention.status == POSITIVE:
                    assert present, (disc, mention.finding, mention.sentence)
                    details = next(d for d in truth["discs"] if d["level"] == disc).get("details")
                    if mention.finding == "herniation" and details:
                        assert mention.detail["herniation_type"] == details["herniation_type"]
                        assert details["herniation_side"] in mention.detail["location"] or (
                            details["herniation_side"] == "central" and mention.detail["location"] == "broad-based")
                    if grade and mention.finding != "disc_degeneration" and "grade" in mention.detail:
                        assert mention.detail["grade"] == grade, (disc, mention.finding, mention.sentence)
                        graded += 1
                elif mention.status == NEGATIVE:
                    assert not present, (disc, mention.finding, mention.sentence)
        for disc, labels in report.disc_labels.items():
            assert set(labels) == set(DISC_FINDINGS)
    assert graded > 500


def test_every_written_level_is_recovered_from_its_notation(corpus) -> None:
    checked = Counter()
    for truth, report in corpus:
        imaged = [v["level"] for v in truth["vertebrae"]]
        transitional = truth["anatomy"]["transitional"]
        sequence = levels_with_transitional(thirteen_thoracic=transitional == "T13", six_lumbar=transitional == "L6")
        for mention in report.mentions:
            if not mention.levels or mention.scope == "study":
                continue
            if mention.finding not in DISC_FINDINGS:  # cancer findings and epidural disease: vertebrae
                recovered = parse_vertebrae(mention.level_text, mention.notation, sequence)
                if mention.notation == "region":
                    recovered = [level for level in recovered if level in imaged]
            else:
                recovered = parse_disc(mention.level_text, mention.notation, sequence)
            assert set(recovered) == set(mention.levels), (mention.notation, mention.level_text, mention.levels)
            checked[mention.notation] += 1
    vertebra_families = {"vertebra", "ordinal", "vertebra_list", "region", *_RANGE_PATTERNS}
    assert vertebra_families <= set(checked), checked
    assert {*_DISC_PATTERNS, "disc_list", "disc_range"} <= set(checked), checked


def test_negations_and_hedges_are_present_and_labelled(corpus) -> None:
    negation_cues = re.compile(r"\b(no|without|negative for|not seen|is not|no evidence of|no other)\b", re.IGNORECASE)
    negative_reports = [r for _, r in corpus if any(m.status == NEGATIVE for m in r.mentions)]
    assert len(negative_reports) > 200
    for report in negative_reports[:50]:
        assert any(negation_cues.search(m.sentence) or "normal" in m.sentence.lower() or "patent" in m.sentence
                   or "maintained" in m.sentence or "preserved" in m.sentence or "clear" in m.sentence
                   or "within normal limits" in m.sentence or "hydration" in m.sentence
                   for m in report.mentions if m.status == NEGATIVE)
    hedged = [m for _, r in corpus for m in r.mentions if m.status == UNCERTAIN]
    assert {m.hedge for m in hedged} == {"possible", "probable"}
    # A hedged level whose only statement is the hedge is labelled unknown.
    for _, report in corpus:
        for mention in report.mentions:
            if mention.status == UNCERTAIN and mention.finding in CANCER_FINDINGS:
                others = [m for m in report.mentions if m is not mention and m.finding == mention.finding
                          and set(m.levels) & set(mention.levels) and m.scope != "study"]
                if not others:
                    for level in mention.levels:
                        assert report.vertebra_labels[level][mention.finding] == UNKNOWN


def test_study_level_statements_and_unmentioned_levels(corpus) -> None:
    widespread = [r for _, r in corpus if any(m.scope == "study" and not m.levels and m.status == POSITIVE
                                              and m.finding == "metastasis" for m in r.mentions)]
    assert widespread, "no widespread metastasis statements"
    for report in widespread:
        assert report.study_labels["metastasis"] == POSITIVE
    # Omission is realistic: many positive truth levels end up unknown.
    unknown_true = sum(1 for truth, report in corpus for v in truth["vertebrae"]
                       if v["lesions"]["metastasis"] and report.vertebra_labels[v["level"]]["metastasis"] == UNKNOWN)
    assert unknown_true > 20


def test_cord_compression_default_negative_and_always_written(corpus) -> None:
    for truth, report in corpus:
        for vertebra in truth["vertebrae"]:
            label = report.vertebra_labels[vertebra["level"]]["cord_compression"]
            if vertebra["lesions"]["cord_compression"]:
                assert label in (POSITIVE, UNKNOWN)
                assert any(m.finding == "cord_compression" and vertebra["level"] in m.levels for m in report.mentions)
            else:
                assert label == NEGATIVE


def test_transitional_anatomy_is_stated(corpus) -> None:
    for truth, report in corpus:
        transitional = truth["anatomy"]["transitional"]
        imaged = [v["level"] for v in truth["vertebrae"]]
        if transitional in imaged:
            assert report.transitional == transitional
            assert transitional in report.text
        elif transitional:
            assert report.transitional == UNKNOWN


def test_variety_over_300_reports(corpus) -> None:
    templates = {t for _, r in corpus for t in r.templates}
    families = {m.notation for _, r in corpus for m in r.mentions}
    styles = {r.style for _, r in corpus}
    dialects = {r.dialect for _, r in corpus}
    # A toy generator (one template per finding and polarity) has ~20 templates.
    assert len(templates) >= 250, len(templates)
    assert len(families) >= 16, families
    assert styles == set(STYLES) and dialects == {"us", "uk"}
    texts = [r.text for _, r in corpus]
    assert len(set(texts)) == len(texts)
    joined = "\n".join(texts)
    for uk, us in (("tumour", "tumor"), ("oedema", "edema"), ("calibre", "caliber")):
        assert uk in joined and us in joined
    for phrase in ("L4-5", "L4/L5", "L4–L5", "L4/5", "C5/6", "lower thoracic spine", "designated L6",
                   "cannot be excluded", "Bilsky", "no evidence of", "widespread"):
        assert phrase.lower() in joined.lower(), phrase


def test_labels_from_mentions_precedence() -> None:
    def m(finding: str, status: str, levels: tuple[str, ...], scope: str = "level") -> Mention:
        return Mention(finding, status, scope, levels, "", "study" if scope == "study" else "vertebra", "t#0")

    mentions = [
        m("metastasis", NEGATIVE, ("T1", "T2", "T3"), scope="study"),
        m("metastasis", POSITIVE, ("T2",)),
        m("metastasis", UNCERTAIN, ("T3",)),
        m("disc_degeneration", POSITIVE, ("T1/T2",)),
    ]
    vertebrae, bilsky, discs, grades, study = labels_from_mentions(mentions, ["T1", "T2", "T3"], ["T1/T2", "T2/T3"])
    assert [vertebrae[v]["metastasis"] for v in ("T1", "T2", "T3")] == [NEGATIVE, POSITIVE, UNKNOWN]
    assert all(vertebrae[v]["cord_compression"] == NEGATIVE for v in vertebrae)
    assert vertebrae["T1"]["fracture"] == UNKNOWN and study["fracture"] == UNKNOWN
    assert study["metastasis"] == POSITIVE and study["cord_compression"] == NEGATIVE
    assert discs["T1/T2"]["disc_degeneration"] == POSITIVE and discs["T2/T3"]["disc_degeneration"] == UNKNOWN
    assert set(discs["T1/T2"]) == set(DISC_FINDINGS) and bilsky == {} and grades == {}


def test_region_levels_follow_the_imaged_sequence() -> None:
    sequence = levels_with_transitional(thirteen_thoracic=True)
    assert region_levels("lower thoracic spine", sequence) == ["T9", "T10", "T11", "T12", "T13"]
    assert region_levels("lumbar spine", ["T12", "L1", "L2"]) == ["L1", "L2"]
