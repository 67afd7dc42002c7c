"""``report``: the targets each run is judged on, the printed summary and the Markdown report (every figure,
the targets met or missed) that ``--report`` writes beside the JSON."""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks import package as pkg

SDMP_STEP_TARGET = 0.9      # MoCo v3 + SDMP step rate >= 0.9 x (single-view forward+backward rate) / 3
GRAPH_TARGET = 1.2          # graph / eager at small batches
SMALL_BATCH = 64            # "small batches" of the graph target: 32 and 64
DALI_TARGET = 0.9           # end-to-end dali >= 0.9 x synthetic
MIX_LOOP_TARGET = 100       # GPU: batched mix >= 100 x the per-sample loop
MIX_COPY_TARGET = 1.2       # batched mix <= 1.2 x the time of x.clone() (a device copy: bandwidth-bound)
SUMMARY_LINES = 40
AIM_IMAGES_PER_S, AIM_MFU = 4000, 0.40  # long-range aim per H100, ViT-S MoCo v3 + SDMP


def fmt(v) -> str:
    """A table cell: yes / no, four significant digits, JSON for containers, pipes escaped."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.4e}"
    if isinstance(v, int) and abs(v) >= 10 ** 7:
        return f"{v:.4e}"
    if isinstance(v, (list, dict, tuple)):
        return json.dumps(v, default=str)
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(rows: list[dict], columns: list[str] | None = None) -> list[str]:
    """A Markdown table of ``rows``: the given columns, or every key in first-seen order; a missing value is blank."""
    if not rows:
        return ["(no rows)"]
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    out = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    out += ["| " + " | ".join(fmt(r[c]) if c in r else "" for c in columns) + " |" for r in rows]
    return out


def evaluate_targets(out: dict) -> list[dict]:
    """The issue's targets, each with the figure it is judged on and met = yes / no / None (not measured here)."""
    res, gpu = out["results"], out["env"]["device"].startswith("cuda")
    where = "" if gpu else "CPU figure; the target is set for a GPU"
    targets = []
    e2e = {r["loader"]: r for r in res.get("e2e", []) if "loader" in r}
    for name in ["dali"] + [n for n in e2e if n not in ("dali", "synthetic")]:  # dali's is the target
        row = e2e.get(name, {})
        targets.append({"target": f"end-to-end {name} >= {DALI_TARGET} x synthetic", "figure":
                        row.get("fraction_of_synthetic", row.get("status", f"{name} not run")),
                        "met": row["fraction_of_synthetic"] >= DALI_TARGET if "fraction_of_synthetic" in row else None,
                        "note": where})
    for t in res.get("step_targets", []):
        targets.append({"target": f"MoCo v3 + SDMP step >= {SDMP_STEP_TARGET} x single-view fwd+bwd rate / 3 "
                                  f"({t['backbone']}, batch {t['batch']}, {t['mode']})",
                        "figure": t["ratio_step_over_single_view_third"], "met": t["met"], "note": where})
    modes = [r for r in res.get("step_modes", []) if r.get("status") == "ok"]
    for r in modes:
        if r["mode"] != "graph" or "speedup_vs_eager" not in r:
            continue
        small = r["batch"] <= SMALL_BATCH
        targets.append({"target": f"graph >= {GRAPH_TARGET} x eager at small batches ({r['method']}, {r['backbone']}, "
                                  f"batch {r['batch']})", "figure": r["speedup_vs_eager"],
                        "met": r["speedup_vs_eager"] >= GRAPH_TARGET if small else None,
                        "note": "" if small else "reported (the target is for batches <= 64)"})
    graph_rows = [r for r in res.get("step_modes", []) if r.get("mode") == "graph"]
    if graph_rows and not any(r.get("status") == "ok" for r in graph_rows):
        targets.append({"target": f"graph >= {GRAPH_TARGET} x eager at small batches", "met": None,
                        "figure": graph_rows[0]["status"], "note": ""})
    targets += mixing_targets(res.get("mixing", []), gpu, where)
    vit_s = [r for r in modes if r["method"] == "mocov3+sdmp" and r["backbone"] == "vit_small"]
    best = max(vit_s, key=lambda r: r["images_per_s"], default=None)
    targets.append({"target": f"aim: >= {AIM_IMAGES_PER_S} images/s per GPU, ViT-S MoCo v3 + SDMP", "met":
                    best["images_per_s"] >= AIM_IMAGES_PER_S if best else None,
                    "figure": f"{best['images_per_s']} ({best['mode']}, batch {best['batch']})" if best else
                    "not measured (no ViT-S row: it runs on CUDA without --quick)", "note": ""})
    best = max((r for r in vit_s if "mfu" in r), key=lambda r: r["mfu"], default=None)
    targets.append({"target": f"aim: about {AIM_MFU:.0%} MFU, ViT-S MoCo v3 + SDMP", "met":
                    best["mfu"] >= AIM_MFU if best else None,
                    "figure": f"{best['mfu']} ({best['mode']}, batch {best['batch']}; {best['peak']})" if best else
                    "not measured (no ViT-S row: it runs on CUDA without --quick)", "note": ""})
    return targets


def mixing_targets(rows: list[dict], gpu: bool, where: str) -> list[dict]:
    """Per op: batched mix against the per-sample loop (GPU target) and against a device copy (bandwidth)."""
    out = []
    for r in rows:
        ok = "speedup_vs_loop" in r
        out.append({"target": f"mix >= {MIX_LOOP_TARGET} x the per-sample loop ({r['op']}, batch {r['batch']})",
                    "figure": r["speedup_vs_loop"] if ok else r.get("status"),
                    "met": r["speedup_vs_loop"] >= MIX_LOOP_TARGET if ok and gpu else None,
                    "note": "" if gpu else "not judged on a CPU (the target is set for a GPU)"})
        out.append({"target": f"mix <= {MIX_COPY_TARGET} x a device copy ({r['op']}, batch {r['batch']})",
                    "figure": f"{r['mix_over_clone']} ({r['gb_per_s']} GB/s)" if ok else r.get("status"),
                    "met": r["mix_over_clone"] <= MIX_COPY_TARGET if ok else None, "note": where})
    return out


def summary_lines(out: dict, limit: int = SUMMARY_LINES) -> list[str]:
    """At most ``limit`` lines: the count of targets met / NOT met / not measured, each target with its figure,
    the failures."""
    targets, failures = out.get("targets", []), out.get("failures", [])
    word = {True: "met", False: "NOT met", None: "not measured"}
    counts = {w: sum(word[t["met"]] == w for t in targets) for w in word.values()}
    lines = [f"== summary: {counts['met']} met, {counts['NOT met']} NOT met, {counts['not measured']} not measured; "
             f"{len(failures)} failure(s)"]
    lines += [f"{word[t['met']]:<12} {t['target']}: {fmt(t['figure'])}" for t in targets]
    lines += [f"FAILED       {f}" for f in failures]
    if len(lines) > limit:
        lines = lines[:limit - 1] + [f"... {len(lines) - limit + 1} more lines in the JSON and the report"]
    return lines


def write_report(out: dict, path: str | Path) -> Path:
    """Markdown: machine and versions, peak, step modes with MFU, single-view target, end-to-end, every other
    section's rows, the targets and the failures."""
    env, res = out["env"], out["results"]
    lines = ["# Throughput report", "",
             f"`python benchmarks/throughput.py {' '.join(out.get('argv', []))}`, {env.get('date')}, "
             f"device {env.get('gpu') or env.get('device')}. Every figure comes from this one run; "
             "the JSON beside it holds the same rows.", "",
             "## Machine and versions", ""]
    lines += md_table([{"key": k, "value": v} for k, v in env.items()])
    lines += ["", "## Targets", ""]
    lines += md_table([{**t, "met": {True: "met", False: "NOT met", None: "not measured"}[t["met"]]}
                       for t in out.get("targets", [])], ["target", "figure", "met", "note"])
    if "peak" in res:
        lines += ["", "## Peak (the MFU denominator)", ""] + md_table(res["peak"])
    if "step_modes" in res:
        lines += ["", "## Training step: eager / unfused / compile / graph", "",
                  "Synthetic views (compute only). `speedup_vs_eager` = eager step time / this mode's step time; "
                  "`mfu` = FLOPs per step (counted on the eager step) / step time / the peak named in `peak`.", ""]
        lines += md_table(res["step_modes"], ["method", "backbone", "size", "mode", "batch", "status", "step_ms",
                                              "images_per_s", "speedup_vs_eager", "flops_per_step", "achieved_tflops",
                                              "mfu", "precision", "fused"])
        counted = next((r["flops_counted"] for r in res["step_modes"] if "flops_counted" in r), None)
        if counted:
            lines += ["", f"FLOPs: {counted}. Peak: {res['peak'][0]['name'] if res.get('peak') else 'not measured'}."]
    if "single_view" in res:
        lines += ["", "## Single-view forward+backward and the SDMP step target", "",
                  "The backbone alone on one view (same batch, precision, channels-last), gradients but no optimizer; "
                  "`flops_fwd_bwd_meta`: the same pass counted on the meta device (the cross-check of the attention "
                  "count).", ""]
        lines += md_table(res["single_view"], ["backbone", "size", "batch", "status", "precision", "channels_last",
                                               "fwd_bwd_ms", "images_per_s", "flops_fwd_bwd", "attention_flops",
                                               "flops_fwd_bwd_meta", "meta_check", "mfu"])
        lines += ["", "Target: MoCo v3 + SDMP step rate / (single-view rate / 3) >= 0.9.", ""]
        lines += md_table(res.get("step_targets", []))
    if "e2e" in res:
        lines += ["", "## End-to-end training (MoCo v3 + SDMP through sdmp_fast.pretrain)", "",
                  "images/s between the end of the warm-up and the last log point of the run's metrics.jsonl; "
                  "`fraction_of_synthetic` = this loader's rate / the synthetic loader's.", ""]
        lines += md_table(res["e2e"], ["loader", "status", "images_per_s", "fraction_of_synthetic", "batch",
                                       "warmup_steps", "measured_steps", "window_images_per_s", "warmup_images_per_s",
                                       "fit_images_per_s", "workers", "wall_s", "source"])
    if "input" in res:
        lines += ["", "## Input profile: compute ceiling, input ceiling, real rate (sdmp_fast.pretrain --profile-input)",
                  "", "Per loader, in one process: the step on synthetic views, the loader alone, both; the verdict "
                  "compares the two ceilings. `real_data_wait_frac`: the host's wait for batches in the real arm.", ""]
        lines += md_table(res["input"], ["loader", "status", "compute_images_per_s", "input_images_per_s",
                                         "real_images_per_s", "real_data_wait_frac", "bound", "decode_ms",
                                         "augment_ms", "verdict", "levers", "batch", "steps", "workers", "wall_s"])
    for section, rows in res.items():
        if section in ("peak", "step_modes", "single_view", "step_targets", "e2e", "input"):
            continue
        lines += ["", f"## {section}", ""] + md_table(rows if isinstance(rows, list) else [rows])
    lines += ["", "## Failures", ""] + ([f"- {f}" for f in out.get("failures", [])] or ["none"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines += ["", "## Figure", "", write_figure(out, path.with_suffix(".png"))]
    path.write_text("\n".join(lines) + "\n")
    return path


def figure_panels(res: dict) -> dict:
    """{panel: {loader: {series: [images/s]}}}: end-to-end rate per loader beside synthetic's, and the three arms of
    the input profile per loader."""
    panels = {}
    e2e = [r for r in res.get("e2e", []) if r.get("status") == "ok"]
    if e2e:
        panels["end-to-end images/s (synthetic = compute only)"] = {r["loader"]: {"images/s": [r["images_per_s"]]}
                                                                    for r in e2e}
    rows = [r for r in res.get("input", []) if r.get("status") == "ok"]
    if rows:
        panels["input profile images/s"] = {f"{r['loader']}: {r['bound']}": {
            arm: [r[f"{arm}_images_per_s"]] for arm in ("compute", "input", "real")} for r in rows}
    return panels


def write_figure(out: dict, path: Path) -> str:
    """The PNG beside the report (images/s per loader against synthetic, the input profile); the Markdown line
    that shows it, or says why there is none."""
    env = out["env"]
    return pkg.bar_png(figure_panels(out["results"]), path, "images/s",
                       f"throughput, {env.get('gpu') or env.get('device')}, {env.get('date')}")


def print_results(out: dict) -> None:
    """Every row, the targets and the failures on stdout, one JSON object a line."""
    for name, rows in out["results"].items():
        print(f"== {name}")
        for r in rows:
            print("  " + json.dumps(r, default=str))
    print("== targets")
    for t in out["targets"]:
        print("  " + json.dumps(t, default=str))
    if out["failures"]:
        print("== failures\n  " + "\n  ".join(out["failures"]))
