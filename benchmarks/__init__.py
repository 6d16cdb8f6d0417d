"""spine-map benchmarks and robustness harness (not part of the shipped app).

* ``python -m benchmarks [--quick]`` — speed/memory benchmark (:mod:`benchmarks.speed`).
* ``python -m benchmarks.robustness [--n N]`` — fuzzed-study harness (:mod:`benchmarks.robustness`).

See ``benchmarks/README.md``.
"""
