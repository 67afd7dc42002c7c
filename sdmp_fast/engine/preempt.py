"""Preemption (SIGTERM, Slurm's SIGUSR1, Ctrl-C's SIGINT) agreed across ranks, and the tests' fault-injection hook.

Preemption: a signal only sets a flag in the handler. After every step each rank calls :meth:`Preemption.poll`;
with several ranks, that starts a non-blocking MAX all-reduce of the flag on a side gloo group (host memory,
never the GPU stream) and reads the all-reduce started ``AGREE_LAG`` steps earlier, which has long completed.
Every rank starts and reads the same sequence of all-reduces, so every rank learns the decision at the same
step, at most ``AGREE_LAG + 1`` steps after the first signal on any rank, with no per-step host wait on the
device. The trainer then reads its logs (the non-finite check comes before any write), writes the checkpoint
and returns; the entry point exits 0. With ``#SBATCH --signal=USR1@180`` Slurm sends SIGUSR1 180 s before the
end: a few steps plus one checkpoint write must fit in that.

Ctrl-C (SIGINT) is the same stop (the terminal signals every rank and every loader worker of the foreground
group: a worker forked inside the loop inherits the handler, which ignores signals outside the process that
installed it, so the workers keep serving the last batches). A second Ctrl-C in the same process exits at
once (exit status 130, no checkpoint beyond those already written).

Fault injection (tests only): ``SDMP_FAULT`` holds comma-separated ``point@N`` entries, optionally ``#R``
to restrict one to rank R:

* ``kill_in_checkpoint@N``: the process kills itself (SIGKILL) half-way through writing the checkpoint of
  step N (the temporary file is left half-written, as a real crash would);
* ``sigterm@N`` / ``sigusr1@N`` / ``sigint@N``: the process sends itself that signal after step N;
* ``nan@N``: the loss of step N is multiplied by NaN (a diverging run).
"""
from __future__ import annotations

import os
import signal
import sys
from collections import deque

import torch

from sdmp_fast import dist

SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")
INTERRUPTED = 130  # the exit status of a process stopped by Ctrl-C, as shells report it
AGREE_LAG = 2


class Preemption:
    """Signal flag + cross-rank agreement; ``install()`` / ``restore()`` bracket the training loop."""

    def __init__(self):
        self.flag, self.signal_name = False, None
        self._pid = os.getpid()
        self._previous: dict = {}
        self._pending: deque = deque()
        self.group = None
        if dist.get_world() > 1:  # a collective: every rank builds its trainer at the same point
            import torch.distributed as tdist
            self.group = tdist.new_group(backend="gloo")

    def _handler(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if os.getpid() != self._pid:
            return  # a loader worker forked while the handler was installed: its parent decides
        # os.write: the handler may run while the main thread is inside a write to sys.stderr (the progress bar),
        # and a buffered stream refuses a reentrant write
        if signum == signal.SIGINT and self.signal_name == "SIGINT":
            os.write(2, b"\n[run] second Ctrl-C: exiting now (the checkpoints written so far are kept)\n")
            raise SystemExit(INTERRUPTED)
        self.flag, self.signal_name = True, signal.Signals(signum).name
        if signum == signal.SIGINT and dist.is_main():
            os.write(2, b"\n[run] Ctrl-C: stopping after this step with a checkpoint (Ctrl-C again to exit at once)\n")

    def install(self) -> None:
        self._pid = os.getpid()
        for name in SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                try:
                    self._previous[sig] = signal.signal(sig, self._handler)
                except ValueError:  # not the main thread (an embedding application): no preemption handling
                    return

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def poll(self) -> bool:
        """Called by every rank after every step; True on every rank at the same step once any rank was signalled."""
        if self.group is None:
            return self.flag
        import torch.distributed as tdist
        t = torch.tensor([int(self.flag)], dtype=torch.int32)
        self._pending.append((tdist.all_reduce(t, op=tdist.ReduceOp.MAX, group=self.group, async_op=True), t))
        if len(self._pending) <= AGREE_LAG:
            return False
        work, t = self._pending.popleft()
        work.wait()
        if int(t[0]) and self.signal_name is None:
            self.signal_name = "a signal on another rank"
        return bool(int(t[0]))

    def drain(self) -> None:
        """Complete the outstanding all-reduces (every rank has started the same ones)."""
        while self._pending:
            self._pending.popleft()[0].wait()


def _faults() -> list[tuple[str, int, int | None]]:
    out = []
    for item in filter(None, (s.strip() for s in os.environ.get("SDMP_FAULT", "").split(","))):
        spec, _, rank = item.partition("#")
        point, _, step = spec.partition("@")
        out.append((point, int(step), int(rank) if rank else None))
    return out


def fault(point: str, step: int) -> bool:
    """True when ``SDMP_FAULT`` names ``point@step`` for this rank (no environment variable: always False)."""
    if "SDMP_FAULT" not in os.environ:
        return False
    return any(p == point and s == step and (r is None or r == dist.get_rank()) for p, s, r in _faults())


def after_step(step: int) -> None:
    """The signal faults: send this process the named signal after ``step``."""
    for name in SIGNALS:
        if fault(name.lower(), step):
            os.kill(os.getpid(), getattr(signal, name))


def kill_now(reason: str) -> None:
    print(f"[fault] SDMP_FAULT: killing this process ({reason})", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
