"""``python -m sdmp_fast.doctor``: what to run on a new machine before a long run.

    python -m sdmp_fast.doctor [--only NAME,..] [--skip NAME,..] [--json FILE] [-v]
    python -m sdmp_fast.doctor --config configs/X.yaml --data PATH [--loader L] [section.key=value ...]

One line per check: ``ok (evidence)``, ``FAILED (reason)`` or ``skipped (why)``; the exit code is 1 when a check
failed. On any machine: versions, the loaders, every DALI training graph defined for the GPU, the training step
of each method on fake CUDA tensors, the Triton kernels compiled for this GPU's architecture (sm_90 without a
GPU). On a GPU machine also: one batch of each installed loader on the GPU, an eager step, a CUDA-graph step
against the eager one, each Triton kernel against its torch twin. With a config, data or loader: the planned
run (its data read by its loader, the output folder writable, free disk and /dev/shm, one step at its batch).
The checks are package code (:mod:`sdmp_fast.health`), the same functions the tests call.
"""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from sdmp_fast.cli import Flag, add_config_arguments, command_parser, parse, print_config, start_process
from sdmp_fast.cli import main as cli_main
from sdmp_fast.config import ALIASES, Config, load_config
from sdmp_fast.health import Outcome, run_check

FLAGS = {flag: Flag(key) for flag, key in ALIASES.items()}
# name -> "module:function" of sdmp_fast.health, in the order of the table
CHECKS = {
    "versions": "environment:installed_versions",
    "loaders": "environment:loaders_importable",
    "dali-gpu-graphs": "dali_graphs:dali_gpu_graphs",
    "fake-cuda-step": "fake_cuda:fake_cuda_steps",
    "triton-compile": "kernels:triton_compile",
    "gpu-loader-batches": "gpu:gpu_loader_batches",
    "gpu-eager-step": "gpu:gpu_eager_step",
    "gpu-graph-step": "gpu:gpu_graph_step",
    "gpu-triton-parity": "kernels:triton_parity_on_gpu",
}
RUN_CHECKS = ("run-data", "run-output", "run-space", "run-step")


def _check(target: str):
    module, fn = target.split(":")
    return getattr(importlib.import_module(f"sdmp_fast.health.{module}"), fn)


def build_parser():
    p = command_parser("python -m sdmp_fast.doctor", __doc__.split("\n\n")[0].split(": ", 1)[1],
                       epilog="checks: " + ", ".join([*CHECKS, *RUN_CHECKS]))
    add_config_arguments(p, FLAGS, ": check the run this config plans (with --data, --loader, overrides)",
                         "data.batch_size=256", Config)
    p.add_argument("--only", default="", metavar="NAME,..", help="run only these checks")
    p.add_argument("--skip", default="", metavar="NAME,..", help="leave these checks out")
    p.add_argument("--json", metavar="FILE", help="also write the outcomes as JSON to FILE")
    p.add_argument("-v", "--verbose", action="store_true", help="print the traceback of a failed check")
    return p


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHECKS and n not in RUN_CHECKS]
    if unknown:
        from sdmp_fast.schema import ConfigError
        raise ConfigError(f"unknown check {', '.join(unknown)}; the checks: {', '.join([*CHECKS, *RUN_CHECKS])}")
    return names


def run(argv: list[str] | None = None) -> list[Outcome]:
    args, overrides = parse(build_parser(), FLAGS, argv)
    only, skip = _names(args.only), _names(args.skip)
    planned = bool(args.config or overrides)
    checks = [(n, _check(t)) for n, t in CHECKS.items()]
    if planned:
        cfg = load_config(args.config, overrides)
        if args.print_config:
            print_config(cfg)
            return []
        from sdmp_fast.health.plan import PlannedRun
        plan = PlannedRun(cfg, start_process(cfg.run.device, cfg.run.threads, distributed=False))
        checks += list(zip(RUN_CHECKS, (plan.data, plan.output, plan.space, plan.step)))
    checks = [(n, fn) for n, fn in checks if (not only or n in only) and n not in skip]
    width = max(len(n) for n, _ in checks) if checks else 0
    outcomes = []
    for name, fn in checks:
        outcome = run_check(name, fn, verbose=args.verbose)
        print(outcome.line(width), flush=True)
        outcomes.append(outcome)
    failed = [o.name for o in outcomes if o.failed]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "skipped", "FAILED")}
    print(f"doctor: {counts['ok']} ok, {counts['skipped']} skipped, {counts['FAILED']} FAILED"
          + (f" ({', '.join(failed)})" if failed else ""), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps([o.__dict__ for o in outcomes], indent=1) + "\n")
    return outcomes


def main(argv: list[str] | None = None) -> int:
    """The exit code: 2 for bad arguments (as every command), 1 when a check failed, else 0."""
    done: list[Outcome] = []
    code = cli_main(lambda a: done.extend(run(a)), argv)
    return code or (1 if any(o.failed for o in done) else 0)


if __name__ == "__main__":
    sys.exit(main())
