"""A CPU stand-in for ``sdmp_fast.engine.graph.CudaGraphs``, to test ``GraphStep``'s bookkeeping without CUDA."""
from __future__ import annotations


class EmulatedGraphs:
    """"Capture" keeps the function and each replay calls it again with everything the capture fixed (static
    inputs, the host step of the capture). It checks GraphStep's bookkeeping (warm-up, static buffers, the
    device step counter, phase changes); what only CUDA can show (capture rules, memory pools, generator
    registration) is left to the gpu tests."""

    def eager(self, fn):
        return fn()

    def capture(self, fn, generators):
        box = {}

        def replay():
            box["out"] = fn()
        return replay, lambda: box["out"]
