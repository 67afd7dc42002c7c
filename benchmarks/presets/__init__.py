"""The presets of ``benchmarks/accuracy.py``: one module each, every one run as ``run(args)``."""
