"""``python -m training evaluate reports``: the report labeller on fresh generated reports.

Each study's truth comes from the generator's own planning (phantom, series plans, roles and the
imaged span) without forming or writing any image, and its report is written exactly as
:func:`training.synthetic.study.generate_study` writes it (same truth, same report seed), from seeds
no other run uses (first seed 940000; training uses 100000–150239, validation 800000–820039, the
other evaluations 900000+, 910000+, 930000+). :func:`~training.reports.labeller.label_report` sees
only the text and the imaged levels.

The reference is what the text states, as the generator records it (``ReportText`` labels: a
positive is a positive the report asserts, omitted or hedged levels are ``unknown``): a labeller
cannot know more than the text says. Precision and recall are given per label type and class —
vertebra × finding × {positive, negative}, study × finding × {positive, negative}, Bilsky grade
exact match, transitional level — and, as a check on the generator rather than the labeller, how
often a vertebra label read from the text agrees with the image truth (lesion present or not).
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Mapping

import numpy as np

from operators.core.gradings import CANCER_FINDINGS
from training.reports.labeller import NEGATIVE, POSITIVE, ReportLabels, label_report
from training.synthetic.phantom import AnatomyConfig
from training.synthetic.report_text import ReportText, compose_report
from training.synthetic.study import StudyConfig, planned_truth, report_rng

#: First seed of report-labeller evaluation studies.
REPORTS_EVALUATION_FIRST_SEED = 940_000

#: Study kinds the evaluation cycles through, as ``(name, transitional level, cancer)``: the generator's
#: own mix (cancer in about one study in five, never transitional anatomy), then studies with cancer
#: and with each transitional level, so that positives, Bilsky grades and T13/L6 ranges are common.
EVALUATION_STUDIES: tuple[tuple[str, str | None, bool | None], ...] = (
    ("random", None, None), ("cancer", None, True), ("cancer L6", "L6", True), ("cancer T13", "T13", True),
)

#: Label classes scored (``unknown`` is what is left; its precision follows from the other two).
SCORED_CLASSES: tuple[str, ...] = (POSITIVE, NEGATIVE)

#: How many disagreements the summary keeps, for reading.
KEPT_MISSES = 60


def study_config(seed: int, index: int) -> StudyConfig:
    """The configuration of the ``index``-th evaluation study (:data:`EVALUATION_STUDIES`, cycled).

    Forced anatomy keeps the generator's pathology-rate range, drawn from its own stream of the seed.
    """
    _, transitional, cancer = EVALUATION_STUDIES[index % len(EVALUATION_STUDIES)]
    if transitional is None and cancer is None:
        return StudyConfig()
    rate = float(np.random.default_rng([seed, 15]).uniform(0.1, 0.9))
    return StudyConfig(anatomy=AnatomyConfig(transitional=transitional, cancer=cancer, pathology_rate=rate))


def generated_report(seed: int, config: StudyConfig | None = None) -> tuple[dict[str, Any], ReportText]:
    """Truth and report of study ``seed``, as :func:`~training.synthetic.study.generate_study` writes them."""
    truth = planned_truth(seed, config)
    return truth, compose_report(truth, report_rng(seed))


class _Tally:
    """Precision/recall counts per (label type, class)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], list[int]] = {}

    def add(self, kind: str, reference: str, predicted: str) -> None:
        for label in SCORED_CLASSES:
            entry = self.counts.setdefault((kind, label), [0, 0, 0])  # both, reference, predicted
            entry[0] += reference == label and predicted == label
            entry[1] += reference == label
            entry[2] += predicted == label

    def rows(self) -> list[dict[str, Any]]:
        return [_row(kind, label, *entry) for (kind, label), entry in self.counts.items()]


def _row(kind: str, label: str, agreed: int, support: int, predicted: int) -> dict[str, Any]:
    return {
        "label": kind, "class": label, "support": support, "predicted": predicted, "agreed": agreed,
        "precision": agreed / predicted if predicted else None, "recall": agreed / support if support else None,
    }


def _compare_study(seed: int, truth: Mapping[str, Any], report: ReportText, labels: ReportLabels, tally: _Tally,
                   image: _Tally, bilsky: list[int], transitional: _Tally, misses: list[dict[str, Any]]) -> None:
    lesions = {v["level"]: v.get("lesions") or {} for v in truth.get("vertebrae") or []}

    def miss(kind: str, where: str, reference: Any, predicted: Any) -> None:
        if len(misses) < KEPT_MISSES:
            misses.append({"seed": seed, "label": kind, "where": where, "reference": reference, "predicted": predicted})

    for level, findings in report.vertebra_labels.items():
        for finding in CANCER_FINDINGS:
            reference, predicted = findings[finding], labels.vertebra_labels[level][finding]
            tally.add(f"vertebra {finding}", reference, predicted)
            if reference != predicted:
                miss(f"vertebra {finding}", level, reference, predicted)
            present = POSITIVE if lesions.get(level, {}).get(finding) else NEGATIVE
            image.add(f"vertebra {finding}", present, predicted)
    for finding in CANCER_FINDINGS:
        reference, predicted = report.study_labels[finding], labels.study_labels[finding]
        tally.add(f"study {finding}", reference, predicted)
        if reference != predicted:
            miss(f"study {finding}", "study", reference, predicted)
    for level, grade in report.bilsky_labels.items():
        bilsky[0] += labels.bilsky_grades.get(level) == grade
        bilsky[1] += 1
        if labels.bilsky_grades.get(level) != grade:
            miss("bilsky", level, grade, labels.bilsky_grades.get(level))
    bilsky[2] += len(labels.bilsky_grades)
    bilsky[3] += sum(report.bilsky_labels.get(level) == grade for level, grade in labels.bilsky_grades.items())
    stated = {"L6": "L6", "T13": "T13", None: "normal", "unknown": "unknown"}
    reference, predicted = stated[report.transitional], stated[labels.transitional]
    for value in ("L6", "T13", "normal"):
        transitional.add(f"transitional {value}", POSITIVE if reference == value else "other",
                         POSITIVE if predicted == value else "other")
    if reference != predicted:
        miss("transitional", "study", reference, predicted)


def evaluate_report_labeller(count: int, first_seed: int = REPORTS_EVALUATION_FIRST_SEED) -> dict[str, Any]:
    """Precision and recall of :func:`label_report` on ``count`` generated reports.

    Returns:
        ``{"studies", "first_seed", "rows": [{"label", "class", "support", "predicted", "agreed",
        "precision", "recall"}], "image_truth_rows": [...], "misses": [...], "sentences_of_misses",
        "seconds"}``; Bilsky rows have class ``grade`` (recall: reference grades read exactly;
        precision: grades read that are right), transitional rows one class per stated value.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    start = time.perf_counter()
    tally, image, transitional = _Tally(), _Tally(), _Tally()
    bilsky = [0, 0, 0, 0]  # reference grades read exactly, reference grades, grades read, grades read right
    misses: list[dict[str, Any]] = []
    styles: dict[str, int] = {}
    for index, seed in enumerate(range(first_seed, first_seed + count)):
        truth, report = generated_report(seed, study_config(seed, index))
        labels = label_report(report.text, list(report.vertebra_labels))
        before = len(misses)
        _compare_study(seed, truth, report, labels, tally, image, bilsky, transitional, misses)
        for entry in misses[before:]:
            entry["sentences"] = _sentences_about(report, entry)
        styles[report.style] = styles.get(report.style, 0) + 1
    rows = tally.rows()
    rows.append(_row("bilsky grade", "grade", bilsky[3], bilsky[1], bilsky[2]) | {"recall": bilsky[0] / bilsky[1] if bilsky[1] else None})
    rows += [row | {"class": row["label"].split()[-1], "label": "transitional"} for row in transitional.rows()
             if row["class"] == POSITIVE]
    return {
        "studies": count,
        "first_seed": first_seed,
        "styles": dict(sorted(styles.items())),
        "rows": rows,
        "image_truth_rows": image.rows(),
        "misses": misses,
        "seconds": round(time.perf_counter() - start, 1),
    }


def _sentences_about(report: ReportText, miss: Mapping[str, Any]) -> list[str]:
    """The report sentences whose mentions set the missed label (what a reader needs to judge it)."""
    finding = miss["label"].split()[-1]
    where = miss["where"]
    found = []
    for mention in report.mentions:
        about = mention.finding == finding or (finding == "bilsky" and mention.finding == "epidural_disease")
        if about and (where == "study" or where in mention.levels or not mention.levels) and mention.sentence not in found:
            found.append(mention.sentence)
    return found


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def markdown_table(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Rows as a Markdown table."""
    lines = ["| label | class | support | predicted | agreed | precision | recall |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(f"| {row['label']} | {row['class']} | {row['support']} | {row['predicted']} | {row['agreed']} | "
                     f"{_number(row['precision'])} | {_number(row['recall'])} |")
    return lines


def print_tables(summary: Mapping[str, Any]) -> None:
    """The labeller table, then the text-versus-image check, then the time."""
    print(f"report labeller on {summary['studies']} generated reports (seeds {summary['first_seed']}–"
          f"{summary['first_seed'] + summary['studies'] - 1}; styles {summary['styles']}); reference: the labels the text states\n")
    print("\n".join(markdown_table(summary["rows"])))
    print("\nlabels read from the text against the image truth (lesion present / absent):\n")
    print("\n".join(markdown_table(summary["image_truth_rows"])))
    print(f"\n{len(summary['misses'])} disagreements kept in the JSON; {summary['seconds']} s")

