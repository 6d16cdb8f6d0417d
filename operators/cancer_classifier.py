"""Cancer SCT operator: labelled vertebrae + sagittal stacks → metastasis, fracture and cord
compression probabilities per vertebra."""

from __future__ import annotations

import logging
from pathlib import Path

from monai.deploy.core import ExecutionContext, Fragment, InputContext, Operator, OperatorSpec, OutputContext

from operators.core.cancer_pipeline import CANCER_MODEL, assess_vertebrae
from operators.core.onnx_models import open_model
from operators.core.run_log import stage_timer
from operators.core.vertebra_pipeline import VertebraFindings

logger = logging.getLogger(__name__)


class CancerClassifierOperator(Operator):
    """Assess every labelled vertebra with the Spinal Context Transformer
    (:func:`operators.core.cancer_pipeline.assess_vertebrae`, SCT §3) on the study's sagittal T1,
    T2 and STIR body volumes.

    Input ports:
        ``decisions``: ``list[SeriesDecision]``; ``sagittal``: the detector's ``list[SagittalStack]``;
        ``findings``: :class:`~operators.core.vertebra_pipeline.VertebraFindings` from the labeller.
    Output port:
        ``findings``: the same vertebrae with ``findings`` and ``needs_review`` filled where assessed,
        and the labeller's warnings followed by this stage's.
    """

    def __init__(self, fragment: Fragment, *args, model_folder: Path, **kwargs) -> None:
        """``model_folder``: folder with ``manifest.json`` and the ONNX models (the app's ``-m``)."""
        self.model_folder = Path(model_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("decisions")
        spec.input("sagittal")
        spec.input("findings")
        spec.output("findings")

    def compute(self, op_input: InputContext, op_output: OutputContext, context: ExecutionContext) -> None:
        decisions = op_input.receive("decisions")
        stacks = op_input.receive("sagittal")
        labelled: VertebraFindings = op_input.receive("findings")
        with stage_timer("cancer_classifier"):
            vertebrae, warnings = labelled.vertebrae, ()
            if vertebrae:
                assessed = assess_vertebrae(vertebrae, decisions, stacks, open_model(CANCER_MODEL, self.model_folder))
                vertebrae, warnings = assessed.vertebrae, assessed.warnings
        logger.info("%d of %d vertebrae assessed for cancer findings",
                    sum(v.findings is not None for v in vertebrae), len(vertebrae))
        op_output.emit(VertebraFindings(vertebrae, (*labelled.warnings, *warnings)), "findings")
