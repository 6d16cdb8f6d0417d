"""Labels from free-text radiology reports (issue 5; SCT, Windsor et al. §4).

:mod:`~training.reports.labeller` reads a spine report and gives per-vertebra positive / negative /
unknown labels for the cancer findings, study-level ("widespread") labels, Bilsky grades and the
transitional level, for training the cancer model on hospital exports (design §5).
:mod:`~training.reports.evaluate` measures it on generated reports (``python -m training evaluate
reports``).
"""
