"""``step``: on synthetic views (compute only):

- ``step``: training-step time of each method with and without SDMP, and the ratio SDMP / plain. SDMP adds
  one momentum-encoder forward for MoCo v3 and one teacher forward on B global images for DINO;
- ``step_modes``: MoCo v3 + SDMP and DINO + SDMP in the modes eager / unfused (``run.fused=false``) / compile
  (``run.compile``) / graph (``run.cuda_graph``; CUDA only) over ``--step-batches`` (CUDA: ViT-S/16 at 224 px,
  batches 32-256), with each mode's speedup over eager, the FLOPs of one step
  (``torch.utils.flop_counter.FlopCounterMode``) and the MFU against ``peak``: the measured dense matmul rate
  of the device (bf16 8192^3 on CUDA, fp32 on CPU). A mode whose config switch this build does not know reads
  "not available in this build";
- ``single_view``: the backbone's single-view forward+backward rate (same batch, precision, channels-last) and
  ``step_targets``: the MoCo v3 + SDMP step rate / (single-view rate / 3), target >= 0.9.
"""
from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks import package as pkg
from benchmarks.sections.common import LATE, Context, failed, free_device, past
from benchmarks.sections.flops import count_flops, how_counted, measure_peak, meta_check
from benchmarks.sections.report import SDMP_STEP_TARGET
from benchmarks.timing import time_fn, time_loop

# Each mode of the training step is a set of RunConfig overrides. A build whose RunConfig lacks the switch
# raises ConfigError("... unknown key ..."): that row then reads "not available in this build".
# "unfused": the eager step with one encoder forward per view (run.fused=false), to show what fusing gains
MODES = {"eager": {}, "unfused": {"run.fused": False}, "compile": {"run.compile": True},
         "graph": {"run.cuda_graph": True}}
NOT_AVAILABLE = "not available in this build"
COMPILE_MARGIN_S = 120.0    # --budget-s: a compile arm starts only with this much time left

# DINO arms: the Fashion-MNIST CPU configuration (2 x 32 px + 4 x 16 px, small head) and DINO's ImageNet shape.
DINO_CPU = {"data.local_crops": 4, "data.local_size": 16, "method.dino_out_dim": 4096, "method.dino_hidden_dim": 512,
            "method.dino_bottleneck_dim": 128, "optim.clip_grad": 3.0, "optim.clip_mode": "per_param",
            "optim.weight_decay_end": 0.4}
DINO_QUICK = dict(DINO_CPU, **{"data.local_crops": 2, "method.dino_out_dim": 256, "method.dino_hidden_dim": 64,
                               "method.dino_bottleneck_dim": 32})
DINO_GPU = dict(DINO_CPU, **{"data.local_crops": 8, "data.local_size": 96, "method.dino_out_dim": 65536,
                             "method.dino_hidden_dim": 2048, "method.dino_bottleneck_dim": 256})


def step_config(method: str, backbone: str, size: int, batch: int, overrides: dict):
    return pkg.load_config(overrides={"method.name": method, "model.backbone": backbone, "data.image_size": size,
                                      "data.batch_size": batch, **overrides})


def build_step_trainer(device: torch.device, method: str, backbone: str, size: int, batch: int,
                       overrides: dict | None = None, past_first_epoch: bool = False):
    """(cfg, trainer, views, recipe): a Trainer on the synthetic loader (compute only) and one batch of its views,
    at a step past the lr warm-up (``past_first_epoch``: also past DINO's first-epoch last-layer freeze)."""
    cfg = step_config(method, backbone, size, batch, {"run.max_steps": 10_000, **(overrides or {})})
    trainer, ld, recipe, res = pkg.build_trainer(cfg, "synthetic", device, Path(tempfile.gettempdir()))
    views = next(iter(ld)).views
    trainer.step = res.warmup_steps + 1 + (res.steps_per_epoch if past_first_epoch else 0)  # lr > 0
    return cfg, trainer, views, recipe


def bench_step(device: torch.device, method: str, backbone: str, size: int, batch: int, iters: int,
               overrides: dict | None = None, warmup: int = 2) -> list[dict]:
    """Median step time of ``method`` without and with SDMP (same views), and their ratio."""
    rows = []
    for sdmp in (False, True):
        _, trainer, views, recipe = build_step_trainer(device, method, backbone, size, batch,
                                                       {"sdmp.enabled": sdmp, **(overrides or {})})
        start = trainer.step

        def one():
            trainer.step = start
            trainer.train_step(views)
        t = time_fn(one, device, warmup=warmup, iters=iters)["median_s"]
        rows.append({"method": method + ("+sdmp" if sdmp else ""), "backbone": backbone, "views": list(recipe.sizes),
                     "batch": batch, "precision": str(trainer.dtype).replace("torch.", ""),
                     "step_ms": round(1e3 * t, 1),
                     "images_per_s": round(batch / t, 1)})
    rows.append({"method": method, "ratio_sdmp_over_plain": round(rows[1]["step_ms"] / rows[0]["step_ms"], 3)})
    return rows


def bench_single_view(device: torch.device, cfg, batch: int, dtype: torch.dtype, timing: dict) -> dict:
    """images/s of one forward+backward of ``model.backbone`` on one view [B, 3, H, W]: channels-last, the step's
    autocast dtype, gradients set to None each call (no optimizer)."""
    torch.manual_seed(0)
    backbone = pkg.build_backbone(cfg).to(device)
    if cfg.model.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    backbone.train()
    size = cfg.data.image_size
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)

    def one():
        backbone.zero_grad(set_to_none=True)
        ctx = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
        with ctx:
            out = backbone(x)
        out.float().sum().backward()
    t = time_loop(one, device, **timing)
    flops, attention = count_flops(one)
    row = {"backbone": cfg.model.backbone, "size": size, "batch": batch, "status": "ok",
           "precision": str(dtype).replace("torch.", ""),
           "channels_last": cfg.model.channels_last, "fwd_bwd_ms": round(1e3 * t["median_s"], 2),
           "images_per_s": round(batch / t["median_s"], 1), "flops_fwd_bwd": flops, "attention_flops": attention}
    meta_check(row, cfg, batch)
    return row


def mode_skip_reason(mode: str, device: torch.device, compile_on_cpu: bool, batch: int,
                     compile_batches: list[int] | None) -> str | None:
    """Why ``mode`` does not run here (None: it runs)."""
    if mode not in MODES:
        return f"unknown mode {mode!r}; choose from {', '.join(MODES)}"
    if mode == "graph" and device.type != "cuda":
        return "skipped: CUDA only (run.cuda_graph captures a CUDA graph)"
    if mode == "compile" and device.type != "cuda" and not compile_on_cpu:
        return "skipped on CPU: torch.compile (inductor) is slow on few cores; pass --compile to run it"
    if mode == "compile" and compile_batches is not None and batch not in compile_batches:
        return f"skipped: compile runs at --compile-batches {','.join(map(str, compile_batches))} only (compile time)"
    return None


def time_mode(device: torch.device, method: str, backbone: str, size: int, batch: int, overrides: dict, mode: str,
              timing: dict, with_flops: bool) -> dict:
    """One mode arm: build the trainer with the mode's switches, time back-to-back steps, count FLOPs (eager)."""
    try:
        cfg, trainer, views, recipe = build_step_trainer(device, method, backbone, size, batch,
                                                         {"sdmp.enabled": True, **overrides, **MODES[mode]},
                                                         past_first_epoch=True)
    except pkg.ConfigError as e:
        if "unknown key" in str(e):
            return {"status": f"{NOT_AVAILABLE} (ConfigError: {e})"}
        raise
    t = time_loop(lambda: trainer.train_step(views), device, **timing)
    row = {"status": "ok", "views": list(recipe.sizes), "precision": str(trainer.dtype).replace("torch.", ""),
           "fused": getattr(cfg.run, "fused", None), "switches": MODES[mode],
           "step_ms": round(1e3 * t["median_s"], 2), "step_ms_min": round(1e3 * t["min_s"], 2),
           "images_per_s": round(batch / t["median_s"], 1), "timing": {k: t[k] for k in ("warmup", "steps", "repeats")}}
    if with_flops:  # model FLOPs are the same in every mode: counted once, on the eager step
        try:
            row["flops_per_step"], row["attention_flops_per_step"] = count_flops(lambda: trainer.train_step(views))
        except Exception as e:  # noqa: BLE001 - the timing stands without the count; say why MFU is missing
            row["flops_per_step"], row["flops_error"] = None, f"{type(e).__name__}: {e}"
    return row


def single_views(device: torch.device, setups: list[tuple], batches: list[int], timing: dict, peak: dict,
                 failures: list[str], deadline: float | None, on_arm=None) -> dict[tuple, dict]:
    """{(setup index, batch): the backbone's single-view forward+backward row with its MFU}."""
    singles = {}
    for si, (method, backbone, size, overrides) in enumerate(setups):
        for batch in batches:
            if past(deadline):
                singles[si, batch] = {"backbone": backbone, "size": size, "batch": batch, "status": LATE}
                continue
            try:
                cfg = step_config(method, backbone, size, batch, overrides)
                single = bench_single_view(device, cfg, batch, pkg.autocast_dtype(cfg.run.precision, device), timing)
                rate = single["flops_fwd_bwd"] / (single["fwd_bwd_ms"] / 1e3)
                single.update(flops_counted=how_counted(device), peak=peak["name"],
                              mfu=round(rate / peak["flops_per_s"], 4))
            except Exception as e:  # noqa: BLE001 - one failed arm is reported; the others still run
                single = {"backbone": backbone, "size": size, "batch": batch,
                          "status": failed(f"single view {backbone} batch {batch}", e, failures)}
            free_device(device)
            singles[si, batch] = single
            if on_arm is not None:  # saved as soon as it is measured
                on_arm("single_view", single)
            print(f"  single view {backbone} batch {batch}: {single.get('images_per_s', '-')} img/s "
                  f"({single['status']})", file=sys.stderr)
    return singles


def mode_arms(device: torch.device, setups: list[tuple], batches: list[int], modes: list[str], timing: dict,
              compile_on_cpu: bool, compile_batches: list[int] | None, failures: list[str],
              deadline: float | None, on_arm=None) -> dict[tuple, dict]:
    """{(setup index, batch, mode): the step row}, mode by mode: eager first and compile (the slowest to start)
    last, so that past ``deadline`` the arms left out are the optional ones."""
    arms = {}
    for mode in sorted(modes, key=lambda m: (m != "eager", m == "compile")):  # stable: otherwise as given
        for si, (method, backbone, size, overrides) in enumerate(setups):
            for batch in batches:
                row = arms[si, batch, mode] = {"method": method + "+sdmp", "backbone": backbone, "size": size,
                                               "mode": mode, "batch": batch}
                skip = mode_skip_reason(mode, device, compile_on_cpu, batch, compile_batches)
                # a compile arm needs about two minutes (compile + timing): it starts only with that much left
                skip = skip or (LATE if past(deadline, COMPILE_MARGIN_S if mode == "compile" else 0.0) else None)
                if skip:
                    row["status"] = skip
                    continue
                label = f"step {method}+sdmp {backbone} {mode} batch {batch}"
                try:
                    row.update(time_mode(device, method, backbone, size, batch, overrides, mode, timing,
                                         with_flops=mode == "eager"))
                except Exception as e:  # noqa: BLE001 - one failed arm is reported; the others still run
                    row["status"] = failed(label, e, failures)
                finally:
                    if mode == "compile":
                        torch.compiler.reset()  # else each new trainer counts towards dynamo's recompile limit
                    free_device(device)
                print(f"  {label}: {row.get('step_ms', '-')} ms, {row.get('images_per_s', '-')} img/s "
                      f"({row['status']})", file=sys.stderr)
                if on_arm is not None:
                    on_arm("step_modes", row)
    return arms


def add_speedups_and_mfu(group: list[dict], peak: dict, counted: str) -> dict[str, dict]:
    """{mode: row} of the arms of one (setup, batch) that ran, with their speedup over eager and, when eager's
    FLOPs were counted, their MFU."""
    ok = {r["mode"]: r for r in group if r["status"] == "ok"}
    flops = ok["eager"].get("flops_per_step") if "eager" in ok else None
    for r in ok.values():
        if "eager" in ok:
            r["speedup_vs_eager"] = round(ok["eager"]["step_ms"] / r["step_ms"], 3)
        if flops:
            achieved = flops / (r["step_ms"] / 1e3)
            r.update(flops_per_step=flops, flops_counted=counted, achieved_tflops=round(achieved / 1e12, 4),
                     mfu=round(achieved / peak["flops_per_s"], 4), peak=peak["name"])
    return ok


def step_target(r: dict, single: dict, backbone: str, batch: int) -> dict:
    """MoCo v3 + SDMP's step rate against a third of the single-view rate (two student forward+backward, three
    teacher forwards)."""
    ratio = r["images_per_s"] / (single["images_per_s"] / 3)
    return {"method": r["method"], "backbone": backbone, "batch": batch, "mode": r["mode"],
            "sdmp_step_images_per_s": r["images_per_s"], "single_view_fwd_bwd_images_per_s": single["images_per_s"],
            "ratio_step_over_single_view_third": round(ratio, 3), "target": f">= {SDMP_STEP_TARGET}",
            "met": ratio >= SDMP_STEP_TARGET}


def bench_step_modes(device: torch.device, setups: list[tuple], batches: list[int], modes: list[str], timing: dict,
                     peak: dict, compile_on_cpu: bool, compile_batches: list[int] | None, failures: list[str],
                     deadline: float | None = None, on_arm=None) -> dict[str, list[dict]]:
    """Per (method + SDMP, batch): each mode's step time, images/s, speedup over eager, FLOPs and MFU; the
    backbone's single-view forward+backward rate; and the target ratio of MoCo v3 + SDMP. The single views run
    first, then the modes; arms past ``deadline`` (time.monotonic()) read "skipped: past ..."; ``on_arm(section,
    row)`` is called as each arm ends."""
    singles = single_views(device, setups, batches, timing, peak, failures, deadline, on_arm)
    arms = mode_arms(device, setups, batches, modes, timing, compile_on_cpu, compile_batches, failures, deadline,
                     on_arm)
    rows, targets, counted = [], [], how_counted(device)
    for si, (method, backbone, _, _) in enumerate(setups):
        for batch in batches:
            group = [arms[si, batch, m] for m in modes]
            rows += group
            ok = add_speedups_and_mfu(group, peak, counted)
            if method == "mocov3" and "images_per_s" in singles[si, batch]:  # the / 3 rule is MoCo v3 + SDMP's
                targets += [step_target(r, singles[si, batch], backbone, batch) for r in ok.values()]
    return {"step_modes": rows, "single_view": list(singles.values()), "step_targets": targets}


def run(ctx: Context) -> None:
    """The ``step`` rows: each method without and with SDMP."""
    rows = ctx.results["step"] = []  # filled as it goes: a crash keeps the rows measured before it
    if past(ctx.deadline):
        rows.append({"status": LATE})
        return
    if ctx.args.quick:
        rows += bench_step(ctx.device, "mocov3", "vit_tiny_p4", 32, 16, 2, {"method.hidden_dim": 256}, warmup=1)
        rows += bench_step(ctx.device, "dino", "vit_tiny_p4_dino", 32, 16, 2, DINO_QUICK, warmup=1)
        return
    rows += bench_step(ctx.device, "mocov3", "vit_tiny_p4", 32, 64, 5, {"method.hidden_dim": 1024})
    rows += bench_step(ctx.device, "dino", "vit_tiny_p4_dino", 32, 64, 5, DINO_CPU)
    if ctx.gpu:
        rows += bench_step(ctx.device, "mocov3", "vit_small", 224, 128, 10, {"method.hidden_dim": 4096})
        rows += bench_step(ctx.device, "dino", "vit_small_dino", 224, 64, 10, DINO_GPU)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def mode_setups(quick: bool, gpu: bool) -> list[tuple]:
    """(method, backbone, image size, overrides) of the step-mode arms."""
    if quick:
        return [("mocov3", "vit_tiny_p4", 32, {"method.hidden_dim": 256}), ("dino", "vit_tiny_p4_dino", 32, DINO_QUICK)]
    if gpu:
        return [("mocov3", "vit_small", 224, {"method.hidden_dim": 4096}), ("dino", "vit_small_dino", 224, DINO_GPU)]
    return [("mocov3", "vit_tiny_p4", 32, {"method.hidden_dim": 1024}), ("dino", "vit_tiny_p4_dino", 32, DINO_CPU)]


def run_modes(ctx: Context) -> None:
    """The ``peak``, ``step_modes``, ``single_view`` and ``step_targets`` rows."""
    args, gpu = ctx.args, ctx.gpu
    peak = measure_peak(ctx.device, args.quick)
    ctx.results["peak"] = [{k: v for k, v in peak.items() if k != "flops_per_s"}]
    print(f"  peak: {peak['name']}", file=sys.stderr)
    batches = (ints(args.step_batches) if args.step_batches else
               ([32] if args.quick else [32, 64, 128, 256]) if gpu else [16 if args.quick else 64])
    timing = (dict(warmup=8, steps=10, repeats=3) if gpu and not args.quick else
              dict(warmup=3, steps=3, repeats=2) if gpu else
              dict(warmup=1, steps=2, repeats=2) if args.quick else dict(warmup=2, steps=3, repeats=3))
    modes = [m.strip() for m in args.step_modes.split(",") if m.strip()]
    methods = [m.strip() for m in (getattr(args, "step_methods", None) or "mocov3,dino").split(",")]
    setups = [s for s in mode_setups(args.quick, gpu) if s[0] in methods]
    ctx.results.update(bench_step_modes(ctx.device, setups, batches, modes, timing, peak,
                                        args.compile, ints(args.compile_batches) if args.compile_batches else None,
                                        ctx.failures, ctx.deadline, ctx.progress))
