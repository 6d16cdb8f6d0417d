"""Report writer operator: stage results → ``spine_report.json`` + ``spine_report.csv``."""

from __future__ import annotations

import logging
from pathlib import Path

from monai.deploy.core import ExecutionContext, Fragment, InputContext, Operator, OperatorSpec, OutputContext

from operators.core.report import SoftwareInfo, study_report, write_report
from operators.core.run_log import stage_timer

logger = logging.getLogger(__name__)


class ReportWriterOperator(Operator):
    """Build the study report, validate it against ``spine_report.schema.json`` and write it
    atomically into the output folder (see :mod:`operators.core.report`).

    Input ports:
        ``study``: :class:`~operators.core.dicom_io.StudyScan` (series and loader warnings).
        ``decisions``: ``list[SeriesDecision]`` from the series selector.
        ``findings``: :class:`~operators.core.vertebra_pipeline.VertebraFindings` from the labeller.
        ``discs``: :class:`~operators.core.grading_pipeline.DiscFindings` from the disc grader.
        ``bilsky``: :class:`~operators.core.bilsky_pipeline.BilskyFindings` from the Bilsky grader.
    Output port:
        ``report``: the validated report dict, for the SR writer.

    Raises (out of ``compute``, ending the run):
        ReportValidationError: the report breaks the schema (a bug; nothing is written).
        ReportWriteError: the output folder cannot be written.
    """

    def __init__(self, fragment: Fragment, *args, output_folder: Path, software: SoftwareInfo, **kwargs) -> None:
        """``output_folder``: where the report goes (the app's ``-o``); ``software``: name, version, models."""
        self.output_folder = Path(output_folder)
        self.software = software
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study")
        spec.input("decisions")
        spec.input("findings")
        spec.input("discs")
        spec.input("bilsky")
        spec.output("report")

    def compute(self, op_input: InputContext, op_output: OutputContext, context: ExecutionContext) -> None:
        study = op_input.receive("study")
        decisions = op_input.receive("decisions")
        findings = op_input.receive("findings")
        discs = op_input.receive("discs")
        bilsky = op_input.receive("bilsky")
        with stage_timer("report_writer"):
            report = study_report(
                study, decisions, self.software, vertebrae=findings.vertebrae, discs=discs.discs, bilsky=bilsky.entries,
                warnings=(*findings.warnings, *discs.warnings, *bilsky.warnings),
            )
            files = write_report(report, self.output_folder)
        logger.info("wrote %s and %s", files.json_path.name, files.csv_path.name)
        op_output.emit(report, "report")
