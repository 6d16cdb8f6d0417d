"""Training of the cancer Spinal Context Transformer (Windsor et al. §3–4): metastasis, fracture and
cord compression per vertebra, from the generator's truth or from labels read from its reports.

The runtime half (body volumes, network input layout, probabilities) lives in
:mod:`operators.core.cancer_pipeline`; this package adds the network and losses
(:mod:`~training.cancer.networks`), the per-study cache, the training loop and the export command.
"""
