"""Bilsky operator: axial T2 / axial CT images + labelled vertebrae → a Bilsky grade per image."""

from __future__ import annotations

import logging
from pathlib import Path

from monai.deploy.core import ExecutionContext, Fragment, InputContext, Operator, OperatorSpec, OutputContext

from operators.core.bilsky_pipeline import BILSKY_MODELS, CANAL_MODEL, BilskyFindings, grade_study
from operators.core.onnx_models import ModelError, open_model
from operators.core.study_warning import StudyWarning
from operators.core.run_log import stage_timer
from operators.core.vertebra_pipeline import VertebraFindings

logger = logging.getLogger(__name__)


class BilskyGraderOperator(Operator):
    """Grade epidural spinal cord compression on every axial image
    (:func:`operators.core.bilsky_pipeline.grade_study`; Hallinan 2022 MRI, 2023 CT).

    Input ports:
        ``study``: :class:`~operators.core.dicom_io.StudyScan`; ``decisions``: ``list[SeriesDecision]``;
        ``findings``: :class:`~operators.core.vertebra_pipeline.VertebraFindings` from the labeller
        (the canal prior and each image's level; none → the canal detector alone).
    Output port:
        ``bilsky``: :class:`~operators.core.bilsky_pipeline.BilskyFindings`.
    """

    def __init__(self, fragment: Fragment, *args, model_folder: Path, **kwargs) -> None:
        """``model_folder``: folder with ``manifest.json`` and the ONNX models (the app's ``-m``)."""
        self.model_folder = Path(model_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study")
        spec.input("decisions")
        spec.input("findings")
        spec.output("bilsky")

    def compute(self, op_input: InputContext, op_output: OutputContext, context: ExecutionContext) -> None:
        study = op_input.receive("study")
        decisions = op_input.receive("decisions")
        labelled: VertebraFindings = op_input.receive("findings")
        with stage_timer("bilsky_grader"):
            findings = BilskyFindings((), ())
            if any(decision.role in ("ax_t2", "ct_axial") for decision in decisions):
                try:
                    graders = {modality: open_model(name, self.model_folder) for modality, name in BILSKY_MODELS.items()}
                    detector = open_model(CANAL_MODEL, self.model_folder)
                except ModelError as error:
                    # The rest of the report stands without Bilsky grades; say why they are missing.
                    findings = BilskyFindings((), (StudyWarning("BILSKY_MODELS_MISSING", f"axial images not graded: {error}"),))
                else:
                    findings = grade_study(study, decisions, labelled.vertebrae, detector, graders)
        logger.info("%d axial images graded for Bilsky", len(findings.entries))
        op_output.emit(findings, "bilsky")
