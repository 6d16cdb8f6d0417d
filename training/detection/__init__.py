"""Training of the VFR vertebra detector and the level labeller (SpineNetV2 §3.1–3.2, §4.4.1–4.4.2).

The runtime halves (grid, target encoding/decoding, tracking, beam search) live in
:mod:`operators.core.vertebra_detection` and :mod:`operators.core.level_labelling`; this package only
adds what training needs: ground truth projected into slices, datasets, networks, losses, loops.
"""
