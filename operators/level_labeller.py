"""Level labeller operator: detected vertebral bodies → levels (C2…S1, L6/T13 when transitional)."""

from __future__ import annotations

import logging
from pathlib import Path

from monai.deploy.core import ExecutionContext, Fragment, InputContext, Operator, OperatorSpec, OutputContext

from operators.core.onnx_models import open_model
from operators.core.run_log import stage_timer
from operators.core.vertebra_pipeline import (
    APPEARANCE_MODEL,
    CONTEXT_MODEL,
    VertebraFindings,
    label_vertebrae,
    report_entries,
)

logger = logging.getLogger(__name__)

class LevelLabellerOperator(Operator):
    """Label the fused bodies by appearance, context and beam search
    (:func:`operators.core.vertebra_pipeline.label_vertebrae`).

    Input ports:
        ``sagittal``: ``list[SagittalStack]``; ``vertebrae``: ``list[FusedVertebra]``;
        ``warnings``: the detector's ``list[StudyWarning]``.
    Output port:
        ``findings``: :class:`~operators.core.vertebra_pipeline.VertebraFindings` for the report.
    """

    def __init__(self, fragment: Fragment, *args, model_folder: Path, **kwargs) -> None:
        """``model_folder``: folder with ``manifest.json`` and the ONNX models (the app's ``-m``)."""
        self.model_folder = Path(model_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("sagittal")
        spec.input("vertebrae")
        spec.input("warnings")
        spec.output("findings")

    def compute(self, op_input: InputContext, op_output: OutputContext, context: ExecutionContext) -> None:
        stacks = op_input.receive("sagittal")
        vertebrae = op_input.receive("vertebrae")
        warnings = list(op_input.receive("warnings"))
        with stage_timer("level_labeller"):
            labelled = []
            if vertebrae:
                labelled, label_warnings = label_vertebrae(
                    vertebrae, stacks,
                    open_model(APPEARANCE_MODEL, self.model_folder), open_model(CONTEXT_MODEL, self.model_folder),
                )
                warnings.extend(label_warnings)
        logger.info("levels: %s", ", ".join(item.level for item in reversed(labelled)) or "none")
        op_output.emit(VertebraFindings(report_entries(labelled), tuple(warnings)), "findings")
