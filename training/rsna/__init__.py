"""RSNA 2024 Lumbar Spine Degenerative Classification (LSDC) adapter.

* :mod:`~training.rsna.layout` reads the competition layout (``train.csv``,
  ``train_label_coordinates.csv``, ``*_series_descriptions.csv``, ``*_images/<study>/<series>/<n>.dcm``)
  into :class:`~training.rsna.layout.RsnaStudy` objects and maps the marked pixels to patient LPS mm;
* :mod:`~training.rsna.submission` writes and reads ``submission.csv``;
* :mod:`~training.rsna.metric` is the competition metric (weighted log loss + ``any_severe_spinal``)
  and the macro one-vs-rest AUROC the evaluation tables quote;
* :mod:`~training.rsna.cli` is ``python -m training rsna score|check``.

Nothing here imports torch: the adapter is plain numpy + pydicom (through the app's DICOM reader).
"""
