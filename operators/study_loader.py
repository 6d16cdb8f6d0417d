"""Study loader operator: a study folder → :class:`~operators.core.dicom_io.StudyScan`."""

from __future__ import annotations

import logging
from pathlib import Path

from monai.deploy.core import ExecutionContext, Fragment, InputContext, Operator, OperatorSpec, OutputContext

from operators.core.dicom_io import scan_study_folder
from operators.core.run_log import stage_timer

logger = logging.getLogger(__name__)


class StudyLoaderOperator(Operator):
    """Scan the input folder into image series, sorted and checked, with a warning per problem.

    This replaces the SDK's ``DICOMDataLoaderOperator`` on purpose: that operator reads every file
    in full, stops the whole run on a truncated file (it only catches ``InvalidDicomError``), does
    not sort slices by position and does not say which files it could not use. The spine-map core
    loader (:func:`operators.core.dicom_io.scan_study_folder`, shared with training) reads headers
    first, skips what it cannot read with a warning naming the file, and sorts slices along the
    slice normal.

    Output port:
        ``study``: :class:`~operators.core.dicom_io.StudyScan` (``series`` and ``warnings``).
    """

    def __init__(self, fragment: Fragment, *args, input_folder: Path, **kwargs) -> None:
        """``input_folder``: the study folder (the app's ``-i``)."""
        self.input_folder = Path(input_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("study")

    def compute(self, op_input: InputContext, op_output: OutputContext, context: ExecutionContext) -> None:
        with stage_timer("study_loader"):
            study = scan_study_folder(self.input_folder)
        logger.info(
            "%d files looked at: %d images in %d series, %d warnings",
            study.n_files, study.n_images, len(study.series), len(study.warnings),
        )
        op_output.emit(study, "study")
