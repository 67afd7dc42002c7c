"""Throughput benchmarks: the one entry point.

    python benchmarks/throughput.py [--only loaders,ffcv,augment,mixing,step,e2e,modes,input] [--device auto|cpu|cuda]
                                    [--json PATH] [--report PATH.md] [--quick] [--budget-s S]

Each section is a module of ``benchmarks/sections/`` (what each measures is listed below). Results are printed
and written as JSON with the environment record (machine, versions, commit), rewritten after every arm, by
default to runs/benchmarks/throughput-<device>.json (untracked; a result meant for the repository is written
with ``--json benchmarks/results/...``). ``--report`` also writes them as Markdown (every figure, the targets met
or missed): ``make gpu-bench`` writes runs/gpu-check/gpu-bench.md this way. The output ends with a summary of at
most 40 lines. The exit status is 1 when a measurement failed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.package import HelpFormatter  # noqa: E402
from benchmarks.sections import augment, e2e, ffcv, loaders, mixing, step  # noqa: E402
from benchmarks.sections import input as input_profile  # noqa: E402
from benchmarks.sections.common import Context, cleanup_sources, failed, free_device  # noqa: E402
from benchmarks.sections.report import evaluate_targets, print_results, summary_lines, write_report  # noqa: E402
from benchmarks.timing import env_record, result_path, write_json  # noqa: E402

SECTIONS = {"loaders": loaders, "ffcv": ffcv, "augment": augment, "mixing": mixing, "step": step, "e2e": e2e,
            "modes": step, "input": input_profile}  # "modes": the step modes alone (--only step runs both)
# e2e before the step modes: under --budget-s the arms left out are the step modes' last ones (compile), then
# the input profiles (each repeats an e2e run three ways)
RUN_ORDER = (("loaders", loaders.run), ("ffcv", ffcv.run), ("augment", augment.run), ("mixing", mixing.run),
             ("step", step.run), ("e2e", e2e.run), ("modes", step.run_modes), ("input", input_profile.run))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/throughput.py", description=__doc__,
                                formatter_class=HelpFormatter,
                                epilog="\n\n".join(dict.fromkeys(mod.__doc__ for mod in SECTIONS.values())))
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    p.add_argument("--device", default="auto", help="auto (cuda if present, else cpu), cpu, cuda or cuda:N")
    p.add_argument("--data", default=None, help="ImageNet-style folder for the loader and e2e benchmarks "
                                                "(default: generated)")
    p.add_argument("--images", type=int, default=320, help="generated JPEGs for the loader benchmark (and distinct "
                                                           "images of the e2e set)")
    p.add_argument("--workers", type=int, default=2, help="loader workers (torch processes, DALI / ffcv threads) "
                                                          "of the loader and ffcv sections")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--json", default=None,
                   help="write results here (default: runs/benchmarks/throughput-<device>.json; a result to commit: "
                        "--json benchmarks/results/NAME.json)")
    p.add_argument("--report", default=None, help="also write the results as a Markdown report here")
    p.add_argument("--budget-s", type=float, default=None, help="time budget in seconds from the start: step-mode "
                   "arms (compile last) and e2e loaders that would start later are listed as skipped")
    p.add_argument("--step-batches", default=None, help="step modes: comma list of batch sizes (default: CUDA "
                                                        "32,64,128,256; CPU 64, --quick 16)")
    p.add_argument("--step-modes", default=",".join(step.MODES), help=f"comma list of {', '.join(step.MODES)}")
    p.add_argument("--step-methods", default="mocov3,dino", help="step modes: comma list of mocov3, dino")
    p.add_argument("--compile", action="store_true", help="run the compile mode on CPU too (always on CUDA)")
    p.add_argument("--compile-batches", default=None, help="compile mode only at these batches (default: all of "
                                                           "--step-batches; each batch compiles anew)")
    p.add_argument("--e2e-loaders", default=None, help=f"comma list (default: every registered loader, "
                                                       f"{', '.join(e2e.E2E_ORDER)} first)")
    p.add_argument("--e2e-steps", type=int, default=None, help="measured steps per loader (default: CUDA 30, CPU 12, "
                                                               "--quick 4)")
    p.add_argument("--e2e-warmup", type=int, default=None, help="warm-up steps per loader, also the log interval "
                                                                "(default: CUDA 10, CPU 4, --quick 2)")
    p.add_argument("--e2e-batch", type=int, default=None, help="global batch for e2e (default: CUDA 128, CPU 64, "
                                                               "--quick 16)")
    p.add_argument("--e2e-workers", type=int, default=None, help="torch loader workers / DALI threads for e2e "
                                                                 "(default: CUDA all cores, CPU --workers)")
    return p


def run_section(ctx: Context, name: str, fn) -> None:
    """Run one section; a crash is recorded (and the report still written) instead of ending the run; what was
    measured is saved after it. (Each section lists its arms past --budget-s as skipped.)"""
    try:
        fn(ctx)
    except Exception as e:  # noqa: BLE001
        failed(f"section {name}", e, ctx.failures)
        free_device(ctx.device)
    ctx.save()


def main(argv: list[str] | None = None) -> dict:
    p = parser()
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    only += ["modes"] if "step" in only else []
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        p.error(f"--only: unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    out = {"env": env_record(device), "argv": list(sys.argv[1:] if argv is None else argv), "results": {},
           "failures": []}
    path = result_path(args.json, f"throughput-{device.type}.json")

    def save() -> None:  # after every arm and section: a crash, hang or kill keeps what was measured
        out["targets"] = evaluate_targets(out)
        write_json(path, out)
        if args.report:
            write_report(out, args.report)
    ctx = Context(args, device, out["results"], out["failures"],
                  time.monotonic() + args.budget_s if args.budget_s else None, save)
    print(json.dumps(out["env"]))
    for name, fn in RUN_ORDER:
        if name in only:
            run_section(ctx, name, fn)
    cleanup_sources()
    save()
    print_results(out)
    print(f"wrote {path}" + (f" and {args.report}" if args.report else ""))
    print("\n".join(summary_lines(out)))
    return out


if __name__ == "__main__":
    sys.exit(1 if main()["failures"] else 0)
