"""The checks of ``python -m sdmp_fast.doctor``: package code, so the tests call the same functions.

A check is a function that returns its evidence (what it checked, e.g. "7 graphs defined, every op after the
decoder on the GPU") or raises: :class:`Skipped` says why it cannot run here (no GPU, a backend not installed),
any other exception is a failure with its reason. :func:`run_check` turns that into one line of the table.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Callable


class Skipped(Exception):
    """The check does not apply on this machine (the message says why)."""


@dataclass(frozen=True)
class Outcome:
    name: str
    status: str  # "ok", "FAILED" or "skipped"
    detail: str  # the evidence, the reason of the failure, or why it was skipped
    seconds: float

    @property
    def failed(self) -> bool:
        return self.status == "FAILED"

    def line(self, width: int = 22) -> str:
        return f"{self.name:<{width}} {self.status:<7} ({self.detail}) [{self.seconds:.1f} s]"


def run_check(name: str, check: Callable[[], str], verbose: bool = False) -> Outcome:
    """Run one check; never raises (a failure is an Outcome with its reason, the traceback with ``verbose``)."""
    t0 = time.perf_counter()
    try:
        status, detail = "ok", check()
    except Skipped as e:
        status, detail = "skipped", str(e)
    except Exception as e:  # noqa: BLE001 - every failure is reported, on its own line
        status, detail = "FAILED", f"{type(e).__name__}: {_first_line(e)}"
        if verbose:
            detail += "\n" + traceback.format_exc()
    return Outcome(name, status, detail, time.perf_counter() - t0)


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or repr(e)
    line = text.splitlines()[0]
    return line if len(line) <= 300 else line[:297] + "..."
