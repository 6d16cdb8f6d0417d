"""``SpineMapApp``: the spine-map pipeline as a MONAI Deploy (SDK 4, Holoscan) application.

Pipeline (design §2)::

    study folder
     └─ StudyLoaderOperator ──────────────────────────────────────────────┐ study
         └─ SeriesSelectorOperator ──────────────────────────────────────┤ decisions
             ├─ VFR detector → level labeller
             │   ├─ cancer SCT (vertebra findings) ──────────────────────┤ findings
             │   ├─ volume extractor → multi-view disc grader ───────────┤ discs
             │   └─ Bilsky grader (axial T2 / CT; canal prior, levels) ──┤ bilsky
             └────────────────────────────────────────────────────────► ReportWriterOperator
                                              (spine_report.json + .csv) → SRWriterOperator
                                              (DICOM SR, key images, vertebra/disc tables)
"""

from __future__ import annotations

import sys
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application

from app import __version__
from operators.core.onnx_models import ModelError, model_infos
from operators.core.report import SoftwareInfo
from operators.bilsky_grader import BilskyGraderOperator
from operators.cancer_classifier import CancerClassifierOperator
from operators.disc_grader import DiscGraderOperator
from operators.level_labeller import LevelLabellerOperator
from operators.report_writer import ReportWriterOperator
from operators.series_selector import SeriesSelectorOperator
from operators.sr_writer import SRWriterOperator
from operators.study_loader import StudyLoaderOperator
from operators.vertebra_detector import VertebraDetectorOperator
from operators.volume_extractor import VolumeExtractorOperator

APP_NAME = "spine-map"


def software_info(model_folder: Path) -> SoftwareInfo:
    """``software`` of the report: this application and the models in ``model_folder``."""
    try:
        models = model_infos(model_folder)
    except ModelError:  # no usable manifest: the detector stage stops the run with the reason
        models = ()
    return SoftwareInfo(name=APP_NAME, version=__version__, models=models)


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
        models = Path(context.model_path)
        vertebra_detector = VertebraDetectorOperator(self, model_folder=models, name="vertebra_detector")
        level_labeller = LevelLabellerOperator(self, model_folder=models, name="level_labeller")
        volume_extractor = VolumeExtractorOperator(self, name="volume_extractor")
        disc_grader = DiscGraderOperator(self, model_folder=models, name="disc_grader")
        cancer_classifier = CancerClassifierOperator(self, model_folder=models, name="cancer_classifier")
        bilsky_grader = BilskyGraderOperator(self, model_folder=models, name="bilsky_grader")
        report_writer = ReportWriterOperator(
            self, output_folder=Path(context.output_path), software=software_info(models), name="report_writer"
        )

        self.add_flow(study_loader, series_selector, {("study", "study")})
        self.add_flow(study_loader, vertebra_detector, {("study", "study")})
        self.add_flow(series_selector, vertebra_detector, {("decisions", "decisions")})
        self.add_flow(
            vertebra_detector, level_labeller,
            {("sagittal", "sagittal"), ("vertebrae", "vertebrae"), ("warnings", "warnings")},
        )
        self.add_flow(study_loader, volume_extractor, {("study", "study")})
        self.add_flow(series_selector, volume_extractor, {("decisions", "decisions")})
        self.add_flow(vertebra_detector, volume_extractor, {("sagittal", "sagittal")})
        self.add_flow(level_labeller, volume_extractor, {("findings", "findings")})
        self.add_flow(volume_extractor, disc_grader, {("views", "views"), ("warnings", "warnings")})
        self.add_flow(series_selector, cancer_classifier, {("decisions", "decisions")})
        self.add_flow(vertebra_detector, cancer_classifier, {("sagittal", "sagittal")})
        self.add_flow(level_labeller, cancer_classifier, {("findings", "findings")})
        self.add_flow(study_loader, bilsky_grader, {("study", "study")})
        self.add_flow(series_selector, bilsky_grader, {("decisions", "decisions")})
        self.add_flow(level_labeller, bilsky_grader, {("findings", "findings")})
        self.add_flow(cancer_classifier, report_writer, {("findings", "findings")})
        self.add_flow(disc_grader, report_writer, {("discs", "discs")})
        self.add_flow(bilsky_grader, report_writer, {("bilsky", "bilsky")})
        self.add_flow(series_selector, report_writer, {("decisions", "decisions")})
        self.add_flow(study_loader, report_writer, {("study", "study")})
        sr_writer = SRWriterOperator(self, output_folder=Path(context.output_path), name="sr_writer")
        self.add_flow(report_writer, sr_writer, {("report", "report")})
        self.add_flow(study_loader, sr_writer, {("study", "study")})
