"""``SpineMapApp``: the spine-map pipeline as a MONAI Deploy (SDK 4, Holoscan) application.

Pipeline (design §2); stages marked * come in later issues and slot in where the comments in
:meth:`SpineMapApp.compose` say::

    study folder
     └─ StudyLoaderOperator ──────────────────────────────────────────────┐ study
         └─ SeriesSelectorOperator ──────────────────────────────────────┤ decisions
             ├─ *VFR detector → *labeller → *volume extractor            │
             │        ├─ *multi-view grader                              │
             │        ├─ *cancer SCT                                     │
             │        └─ *Bilsky classifier                              │
             └────────────────────────────────────────────────────────► ReportWriterOperator
                                                      (spine_report.json + .csv; *SR, key images)
"""

from __future__ import annotations

import sys
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application

from app import __version__
from operators.core.report import SoftwareInfo
from operators.report_writer import ReportWriterOperator
from operators.series_selector import SeriesSelectorOperator
from operators.study_loader import StudyLoaderOperator

APP_NAME = "spine-map"


def software_info() -> SoftwareInfo:
    """``software`` of the report: this application and (once stages use them) its models."""
    return SoftwareInfo(name=APP_NAME, version=__version__)


class SpineMapApp(Application):
    """Spine MRI/CT analysis of one study folder, writing ``spine_report.json`` and ``.csv``.

    Args:
        app_context: the SDK application context; ``input_path`` is the study folder,
            ``output_path`` the folder for the report, ``model_path`` the models folder.

    Run it through :func:`app.cli.run_study` (or ``python app -i STUDY -o OUT``), which prepares
    the output folder, logging and exit codes.
    """

    def __init__(self, app_context: AppContext, *args, **kwargs) -> None:
        # Holoscan would otherwise parse sys.argv (ours, or pytest's) as its own options.
        super().__init__([sys.executable, APP_NAME], *args, **kwargs)
        self.app_context = app_context

    def compose(self) -> None:
        """Create the operators and connect them in pipeline order."""
        context = self.app_context
        study_loader = StudyLoaderOperator(
            self, CountCondition(self, 1), input_folder=Path(context.input_path), name="study_loader"
        )
        series_selector = SeriesSelectorOperator(self, name="series_selector")
        report_writer = ReportWriterOperator(
            self, output_folder=Path(context.output_path), software=software_info(), name="report_writer"
        )

        self.add_flow(study_loader, series_selector, {("study", "study")})
        # Later issues: detector, labeller and volume extractor take `decisions` (and `study` for
        # the pixels) here; the graders, cancer SCT and Bilsky classifier follow the extractor and
        # feed their results into new ports of the report writer.
        self.add_flow(series_selector, report_writer, {("decisions", "decisions")})
        self.add_flow(study_loader, report_writer, {("study", "study")})
