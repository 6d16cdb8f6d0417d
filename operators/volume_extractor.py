"""Volume extractor operator: labelled vertebrae + the study's series → per-disc views."""

from __future__ import annotations

import logging

from monai.deploy.core import ExecutionContext, InputContext, Operator, OperatorSpec, OutputContext

from operators.core.grading_pipeline import extract_study_views
from operators.core.run_log import stage_timer

logger = logging.getLogger(__name__)


class VolumeExtractorOperator(Operator):
    """Extract every disc's sagittal volumes and axial slab
    (:func:`operators.core.grading_pipeline.extract_study_views`; SpineNetV2 §3.3, Park §4.1).

    Input ports:
        ``study``: :class:`~operators.core.dicom_io.StudyScan`; ``decisions``: ``list[SeriesDecision]``;
        ``sagittal``: the detector's ``list[SagittalStack]``;
        ``findings``: :class:`~operators.core.vertebra_pipeline.VertebraFindings` from the labeller.
    Output ports:
        ``views``: ``list[DiscViews]``, cranial → caudal; ``warnings``: ``list[StudyWarning]``.
    """

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study")
        spec.input("decisions")
        spec.input("sagittal")
        spec.input("findings")
        spec.output("views")
        spec.output("warnings")

    def compute(self, op_input: InputContext, op_output: OutputContext, context: ExecutionContext) -> None:
        study = op_input.receive("study")
        decisions = op_input.receive("decisions")
        stacks = op_input.receive("sagittal")
        findings = op_input.receive("findings")
        with stage_timer("volume_extractor"):
            views, warnings = [], []
            if findings.vertebrae:
                views, warnings = extract_study_views(study, decisions, stacks, findings.vertebrae)
        logger.info("%d discs extracted (%d with an axial slab)", len(views), sum(v.axial is not None for v in views))
        op_output.emit(views, "views")
        op_output.emit(warnings, "warnings")
