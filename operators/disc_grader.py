"""Multi-view disc grader operator: per-disc views → SpineNetV2 gradings and RSNA 2024 conditions."""

from __future__ import annotations

import logging
from pathlib import Path

from monai.deploy.core import ExecutionContext, Fragment, InputContext, Operator, OperatorSpec, OutputContext

from operators.core.grading_pipeline import MULTIVIEW_MODEL, SPINENET_MODEL, DiscFindings, grade_discs
from operators.core.onnx_models import open_model
from operators.core.run_log import stage_timer

logger = logging.getLogger(__name__)


class DiscGraderOperator(Operator):
    """Grade every disc (:func:`operators.core.grading_pipeline.grade_discs`): the SpineNetV2 grader on
    the sagittal volumes, the multi-view grader (Park) on sagittal T1, T2/STIR and axial T2 slices.

    Input ports:
        ``views``: ``list[DiscViews]``; ``warnings``: the extractor's ``list[StudyWarning]``.
    Output port:
        ``discs``: :class:`~operators.core.grading_pipeline.DiscFindings` for the report.
    """

    def __init__(self, fragment: Fragment, *args, model_folder: Path, **kwargs) -> None:
        """``model_folder``: folder with ``manifest.json`` and the ONNX models (the app's ``-m``)."""
        self.model_folder = Path(model_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("views")
        spec.input("warnings")
        spec.output("discs")

    def compute(self, op_input: InputContext, op_output: OutputContext, context: ExecutionContext) -> None:
        views = op_input.receive("views")
        warnings = tuple(op_input.receive("warnings"))
        with stage_timer("disc_grader"):
            entries = []
            if views:
                entries = grade_discs(
                    views, open_model(SPINENET_MODEL, self.model_folder), open_model(MULTIVIEW_MODEL, self.model_folder)
                )
        logger.info("%d discs graded", len(entries))
        op_output.emit(DiscFindings(tuple(entries), warnings), "discs")
