"""spine-map: the MONAI Deploy application (``SpineMapApp``) and its command-line entry points.

Importing this package is cheap: the MONAI Deploy SDK / Holoscan stack is imported only when an
application is built (:mod:`app.application`).
"""

#: The one place the spine-map version is written; pyproject.toml reads it from here.
__version__ = "0.1.0"
