"""``input``: is the e2e job input-bound, loader by loader? ``sdmp_fast.pretrain --profile-input`` on the e2e job
(``--e2e-*`` options): ``--e2e-steps`` steps on synthetic views (the compute ceiling), of the loader alone (the
input ceiling) and of both (the real rate), in one process per loader, with the verdict (compute-bound,
input-bound by how much, or both near each other), the host wait of the real arm, the measured decode and
augmentation milliseconds per image and, when input-bound, the levers they point to. The synthetic loader is the
compute ceiling itself and is left out."""
from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks import package as pkg
from benchmarks.sections.common import Context
from benchmarks.sections.e2e import TrainingData, e2e_job, e2e_overrides, each_loader


def profile_row(record: dict) -> dict:
    """The row of one loader from its profile record (engine/profile_input.py)."""
    arms, costs = record["arms"], record["costs"]
    row = {f"{arm}_images_per_s": round(arms[arm]["images_per_s"], 1) for arm in ("compute", "input", "real")}
    row.update(images_per_s=row["real_images_per_s"], real_data_wait_frac=round(arms["real"]["data_wait_frac"], 3),
               bound=record["bound"], verdict=record["verdict"], levers=record["levers"])
    row.update({k: round(costs[k], 3) for k in ("decode_ms", "augment_ms") if k in costs})
    return row


def run(ctx: Context) -> None:
    j = e2e_job(ctx)
    work = tempfile.TemporaryDirectory()
    names = [n for n in j["names"] if n not in pkg.folderless_loaders()]
    train_data = TrainingData(Path(work.name), ctx.args.data, j["images"], (j["steps"] + 8) * j["batch"],
                              j["workers"])
    keys = e2e_overrides(ctx.device, Path(work.name), j["overrides"], j["batch"], j["workers"], j["warmup"],
                         j["steps"])

    def measure(name: str, flags: list[str], data_keys: list[str]) -> dict:
        record = pkg.run_pretrain(["--loader", name, "--out", str(Path(work.name) / f"profile-{name}"),
                                   *(["--config", j["config"]] if j["config"] else []), *flags, *keys, *data_keys,
                                   "--profile-input", str(j["steps"])])
        return {**profile_row(record), "workers": j["workers"]}

    ctx.results["input"] = each_loader(names, {"method": "mocov3+sdmp", "batch": j["batch"], "steps": j["steps"]},
                                       train_data, ctx.device, measure, ctx.failures, ctx.deadline, label="input",
                                       on_row=ctx.progress)
    work.cleanup()
