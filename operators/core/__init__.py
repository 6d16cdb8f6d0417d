"""spine-map shared core: numpy/scipy only, imported by the runtime operators and by training.

Nothing in here imports torch, onnxruntime or the MONAI Deploy SDK, so training code and tests can
use it on any machine.
"""
