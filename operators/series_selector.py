"""Series selector operator: the study's series → one role per series, with the reason."""

from __future__ import annotations

import logging

from monai.deploy.core import ExecutionContext, InputContext, Operator, OperatorSpec, OutputContext

from operators.core.series_roles import assign_roles
from operators.core.run_log import stage_timer

logger = logging.getLogger(__name__)


class SeriesSelectorOperator(Operator):
    """Give every series a role (``sag_t1``, ``sag_t2``, ``sag_stir``, ``ax_t2``, ``ct_axial`` or
    ``unused``) from its DICOM tags, by the rules of :func:`operators.core.series_roles.assign_roles`.

    Input port:
        ``study``: :class:`~operators.core.dicom_io.StudyScan`.
    Output port:
        ``decisions``: ``list[SeriesDecision]``, one per series of the scan.
    """

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study")
        spec.output("decisions")

    def compute(self, op_input: InputContext, op_output: OutputContext, context: ExecutionContext) -> None:
        study = op_input.receive("study")
        with stage_timer("series_selector"):
            decisions = assign_roles(study.series)
        roles = [f"series {series.series_number}: {decision.role}" for series, decision in zip(study.series, decisions)]
        logger.info("roles: %s", ", ".join(roles) or "no series")
        op_output.emit(decisions, "decisions")
