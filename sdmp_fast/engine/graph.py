"""``run.cuda_graph``: the whole training step captured in one CUDA graph and replayed.

What is captured is ``Trainer.step_body``: the forward of the method (mixing included), backward,
gradient clipping, the decoupled weight decay, AdamW (``capturable=True``: its step counters and lr
are device tensors) and the EMA. The step is free of host synchronisation and every value that
changes between steps is read on the device at the device step counter ``Trainer.step_t``, which the
graph itself advances; the mixing op and the view swap are device draws (the method's Mixer is built with
device draws for ``run.cuda_graph``), and the generators the step draws from are registered with the
graph, so every replay draws new lambdas, boxes and ops.

How it runs:

* the first ``WARMUP`` steps of a phase run eagerly on a side stream (lazy initialisation, optimizer
  state, autotuning: nothing of that may happen during capture); they are real training steps;
* then the step is captured once with the current batch's views copied into static input buffers,
  and every later step copies its batch into those buffers (on the current stream, so the copy is
  ordered before the replay while the loader prepares the next batch) and replays the graph;
* one graph at a time (each graph holds its own memory pool): ``Method.phase`` names host decisions
  that change during training (DINO freezes its head's last layer during the first epochs: a
  parameter without gradient must also miss AdamW's update and weight decay); when the phase changes
  the graph is dropped and the new phase's step is captured after its own eager warm-up;
* the logs returned are the graph's static output tensors, overwritten by the next replay: the
  trainer adds them to its running sums right away.

Restrictions (refused with a clear message by the config check and ``Trainer``): CUDA, one process,
AdamW, bf16 or fp32 (fp16's GradScaler decides on the host whether to skip a step), the torch mixing
(``sdmp.impl=torch``: the Triton kernel takes its op from the host). ``SDMP_FAULT=nan@N`` acts at capture
time only.
"""
from __future__ import annotations

import torch

WARMUP = 3


class CudaGraphs:
    """The CUDA side of ``GraphStep``: eager warm-up steps on a side stream, capture into one graph."""

    def __init__(self, device: torch.device):
        self.device = device

    def eager(self, fn):
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            out = fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        return out

    def capture(self, fn, generators):
        """Record ``fn`` (not run) into a new graph; returns (replay, outputs): ``outputs()`` gives fn's
        output tensors, which every replay overwrites in place."""
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        for gen in generators:
            graph.register_generator_state(gen)
        # thread_local: CUDA calls of other threads (the loaders' prefetch threads, pin-memory threads) are allowed
        # during the capture; the default "global" mode would fail the capture on them
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = fn()
        return graph.replay, lambda: out


class GraphStep:
    """Callable ``(views) -> logs`` that replaces the trainer's eager step (see the module docstring).

    ``backend``: what runs the eager steps and captures (default ``CudaGraphs``); any object with its
    ``eager(fn)`` and ``capture(fn, generators)`` will do (tests use a CPU stand-in).
    """

    def __init__(self, trainer, warmup: int = WARMUP, backend=None):
        self.trainer, self.warmup = trainer, warmup
        self.backend = backend or CudaGraphs(trainer.device)
        self.replay = None
        self.phase: int | None = None
        self.eager_left = warmup
        self.static_views: list[torch.Tensor] = []
        self.outputs = None
        self.captures = 0      # graphs captured so far (tests)
        self.replays = 0

    def _eager(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        t = self.trainer

        def run():
            t.step_t.fill_(t.step)
            return t.step_body(views, t.step)
        logs = self.backend.eager(run)
        t.step += 1
        return logs

    def _capture(self, views: list[torch.Tensor]) -> None:
        t = self.trainer
        self.replay = None  # free the previous phase's graph (and its pool) first
        self.static_views = [v.clone() for v in views]
        t.optimizer.zero_grad(set_to_none=True)
        t.step_t.fill_(t.step)
        step, static = t.step, self.static_views
        # capture records without running: step_t is still t.step, and the first replay performs this step
        self.replay, self.outputs = self.backend.capture(lambda: t.step_body(static, step),
                                                             (t.rng.local, t.rng.shared_device))
        self.captures += 1

    def __call__(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        t = self.trainer
        phase = t.method.phase(t.step)
        if phase != self.phase:
            self.phase, self.replay, self.eager_left = phase, None, self.warmup
        if self.replay is None:
            if self.eager_left > 0:
                self.eager_left -= 1
                return self._eager(views)
            self._capture(views)
        else:
            if len(views) != len(self.static_views) or any(s.shape != v.shape for s, v in zip(self.static_views, views)):
                raise ValueError("run.cuda_graph: the views changed shape after capture "
                                 f"({[tuple(v.shape) for v in views]} vs {[tuple(s.shape) for s in self.static_views]}); "
                                 "a graph replays fixed shapes: every batch must be full and of the same sizes")
            for static, v in zip(self.static_views, views):
                static.copy_(v, non_blocking=True)
        t.step_t.fill_(t.step)
        t.method.set_step(t.step)  # host-side values for the logs (a replay runs no Python)
        self.replay()
        self.replays += 1
        t.step += 1
        return self.outputs()
