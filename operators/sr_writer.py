"""SR writer operator: the validated report → DICOM SR, key images, wide CSVs and summary."""

from __future__ import annotations

import logging
from pathlib import Path

from monai.deploy.core import ExecutionContext, Fragment, InputContext, Operator, OperatorSpec, OutputContext

from operators.core.run_log import stage_timer
from operators.core.study_outputs import write_study_outputs

logger = logging.getLogger(__name__)


class SRWriterOperator(Operator):
    """Write everything that follows from the report (see :mod:`operators.core.study_outputs`):
    ``dicom/spine_report_sr.dcm`` (TID 1500), key images (PNG + Secondary Capture),
    ``vertebrae.csv``, ``discs.csv`` and ``summary.txt``.

    Input ports:
        ``report``: the validated ``spine_report.json`` dict from the report writer.
        ``study``: :class:`~operators.core.dicom_io.StudyScan` (source instances and pixels).
    """

    def __init__(self, fragment: Fragment, *args, output_folder: Path, **kwargs) -> None:
        """``output_folder``: the app's ``-o``, where the report writer wrote the report."""
        self.output_folder = Path(output_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("report")
        spec.input("study")

    def compute(self, op_input: InputContext, op_output: OutputContext, context: ExecutionContext) -> None:
        report = op_input.receive("report")
        study = op_input.receive("study")
        with stage_timer("sr_writer"):
            files = write_study_outputs(report, study, self.output_folder)
        logger.info("wrote %s", ", ".join(str(path.relative_to(self.output_folder)) for path in files))
