"""The sections of ``benchmarks/throughput.py``: one module each, every one run as ``run(ctx)`` on a Context."""
