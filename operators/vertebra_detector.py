"""VFR vertebra detector operator: the sagittal series of a study → vertebral bodies in 3D."""

from __future__ import annotations

import logging
from pathlib import Path

from monai.deploy.core import ExecutionContext, Fragment, InputContext, Operator, OperatorSpec, OutputContext

from operators.core.onnx_models import open_model
from operators.core.run_log import stage_timer
from operators.core.vertebra_pipeline import DETECTOR_MODEL, detect_vertebrae, sagittal_stacks

logger = logging.getLogger(__name__)

class VertebraDetectorOperator(Operator):
    """Detect every vertebral body in each sagittal series (SpineNetV2 vector field regression) and
    fuse the series into one list (:func:`operators.core.vertebra_pipeline.detect_vertebrae`).

    Input ports:
        ``study``: :class:`~operators.core.dicom_io.StudyScan`.
        ``decisions``: ``list[SeriesDecision]`` from the series selector.
    Output ports:
        ``sagittal``: ``list[SagittalStack]`` (normalised pixels + geometry) for the labeller.
        ``vertebrae``: ``list[FusedVertebra]``, caudal → cranial.
        ``warnings``: ``list[StudyWarning]`` of this stage.
    """

    def __init__(self, fragment: Fragment, *args, model_folder: Path, **kwargs) -> None:
        """``model_folder``: folder with ``manifest.json`` and the ONNX models (the app's ``-m``)."""
        self.model_folder = Path(model_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study")
        spec.input("decisions")
        spec.output("sagittal")
        spec.output("vertebrae")
        spec.output("warnings")

    def compute(self, op_input: InputContext, op_output: OutputContext, context: ExecutionContext) -> None:
        study = op_input.receive("study")
        decisions = op_input.receive("decisions")
        with stage_timer("vertebra_detector"):
            stacks, warnings = sagittal_stacks(study, decisions)
            vertebrae = []
            if stacks:
                vertebrae = detect_vertebrae(stacks, open_model(DETECTOR_MODEL, self.model_folder))
        logger.info("%d vertebral bodies detected in %d sagittal series", len(vertebrae), len(stacks))
        op_output.emit(stacks, "sagittal")
        op_output.emit(vertebrae, "vertebrae")
        op_output.emit(warnings, "warnings")
