"""Build the spine-map MONAI Application Package (MAP) with holoscan-cli 4.2.

``python -m map_build stage|context|build`` (see :mod:`map_build.__main__`); the work is done in
:mod:`map_build.package`. The folder is not called ``packaging``: that name belongs to the PyPI
``packaging`` module, which holoscan-cli itself imports.
"""
