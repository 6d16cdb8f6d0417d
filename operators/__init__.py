"""spine-map operators: one MONAI Deploy operator per pipeline stage, plus the shared ``core``.

Operator modules import the MONAI Deploy SDK; ``operators.core`` does not, so training code can
import the core without the runtime stack.
"""
