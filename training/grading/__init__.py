"""Training of the disc graders: SpineNetV2 gradings (SpineNetV2 §3.4, §4.4.3) and the multi-view
RSNA 2024 grader (Park et al. §2, §4.2).

The runtime halves (volume extraction, network inputs, output layout) live in
:mod:`operators.core.volume_extraction`, :mod:`operators.core.grading_pipeline` and
:mod:`operators.core.grading_outputs`; this package adds the networks and losses
(:mod:`~training.grading.networks`), the disc cache, the training loops and the export command.
"""
