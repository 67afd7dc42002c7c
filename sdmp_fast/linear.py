"""Linear evaluation of a frozen pretrained backbone (SDMP_SPEC §4.3; Table 1 of the paper).

    python -m sdmp_fast.linear --pretrained RUN_DIR_OR_EXPORT [--protocol mocov3|dino] [--cached-features]
                               [--config configs/eval/linear_mocov3.yaml] [--data PATH] [--out DIR] [--resume auto]
                               [--print-config] [section.key=value ...]

A linear classifier on frozen features (``sdmp_fast/probe.py``): MoCo v3's protocol (last-layer class
token; SGD momentum 0.9, wd 0, lr 3 x batch/256 for ViTs, 90 epochs, cosine) or DINO's (class tokens of
the last 4 blocks concatenated; lr 0.001 x batch/256, 100 epochs). Training views: RandomResizedCrop
(``data.crop_scale``) + horizontal flip, decoded and cut per sample by the ``torch`` loader's helpers
with the randomness of sample i in epoch e drawn from (seed, e, i); validation: the evaluation view of
``sdmp_fast.data.images.eval_spec`` (resize 256 / centre crop 224 scaled to ``data.image_size``). The
backbone is frozen and deterministic in eval mode, so the validation features are computed once.

``--cached-features`` is a fast mode, **not the paper protocol**: the training features too are
computed once from the evaluation view (no augmentation) and the heads train for many epochs on them.

The same architecture at random initialisation (``sdmp_fast/pretrained.py``) gets its own head,
trained side by side on the same batches, and is reported beside the trained backbone. Outputs
(rank 0) in ``run.out_dir`` (default ``RUN_DIR/linear/<protocol>[_cached]``): ``config.yaml``,
``metrics.jsonl`` (one line per epoch), ``checkpoints/`` (every epoch; ``--resume auto``) and
``linear.json``. Under torchrun the heads are DDP-wrapped, each rank computes the features of its
share of the images, and the global batch ``data.batch_size`` is split over the ranks.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF
from tqdm import tqdm

from sdmp_fast.data.sharding import rank_batches, steps_per_epoch
from sdmp_fast.data.images import decode_rgb, eval_batches
from sdmp_fast.augment.reference import rrc_params
from sdmp_fast.streams import sample_generator
from sdmp_fast import dist
from sdmp_fast.config import ConfigError
from sdmp_fast.data.folders import DataError, Split
from sdmp_fast.engine import checkpoint as ckpt
from sdmp_fast.engine.precision import autocast_context
from sdmp_fast.eval.config import (EvalData, EvalRun, LabelledData, _choices, add_common_arguments, check_resume_data,
                                   dump_yaml, fill_data_defaults, parse_command_line, need, to_dict, validate_data,
                                   validate_run)
from sdmp_fast.eval.pretrained import (Pretrained, default_out_dir, is_vit, labels_note, load_eval_splits,
                                       load_pretrained)
from sdmp_fast.data.splits import labelled_split
from sdmp_fast.eval.probe import (PROTOCOLS, LinearHeads, build_probe_optimizer, cosine_lr, evaluate_heads,
                                  feature_dim, format_accuracy, probe_features, probe_step, set_lr)
from sdmp_fast.data.images import eval_spec

FAST_MODE = "fast mode (cached features), not the paper protocol"
PROTOCOL_LR = {"mocov3": 3.0, "dino": 0.001}  # per 256 images (ViT)
MOCOV3_RESNET_LR = 0.1  # main_lincls.py's default, for ResNet-50
PROTOCOL_EPOCHS = {"mocov3": 90, "dino": 100}
FEATURES = {"mocov3": "last-layer class token", "dino": "class tokens of the last 4 blocks, concatenated"}
ARMS = ("trained", "random_init")


@dataclass(frozen=True)
class LinearData(LabelledData):
    crop_scale: tuple[float, float] = field(default=(0.08, 1.0), metadata={"help": "RandomResizedCrop area fraction range of the training views (both protocols: torchvision's default)"})


@dataclass(frozen=True)
class ProbeConfig:
    protocol: str = field(default="mocov3", metadata={"help": "mocov3: last-layer class token; dino: class tokens of the last 4 blocks, concatenated (ViT only)", **_choices(*PROTOCOLS)})
    cached_features: bool = field(default=False, metadata={"help": "fast mode, not the paper protocol: features computed once from the evaluation view, then the heads train on them"})


@dataclass(frozen=True)
class LinearOptim:
    lr: float = field(default=0.0, metadata={"help": "SGD learning rate per 256 images (scaled by global batch / 256); 0 = the protocol's (mocov3: 3.0 for ViTs, 0.1 for ResNets; dino: 0.001)"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay of the heads"})


@dataclass(frozen=True)
class LinearRun(EvalRun):
    epochs: int = field(default=0, metadata={"help": "training epochs of the heads (cosine over them); 0 = the protocol's (mocov3: 90, dino: 100)"})
    eval_every: int = field(default=0, metadata={"help": "also evaluate on val every N epochs (metrics.jsonl); 0 = only at the end. The final epoch's accuracy is reported"})
    stop_after: int = field(default=0, metadata={"help": "stop this invocation (with a checkpoint) after this many epochs without changing the schedule; 0 = off"})


@dataclass(frozen=True)
class LinearConfig:
    data: LinearData = LinearData()
    probe: ProbeConfig = ProbeConfig()
    optim: LinearOptim = LinearOptim()
    run: LinearRun = LinearRun()


ALIASES = {"--protocol": "probe.protocol", "--data": "data.path", "--loader": "data.loader", "--out": "run.out_dir",
           "--label-fraction": "data.label_fraction", "--label-subset": "data.label_subset"}


def validate(cfg: LinearConfig) -> None:
    validate_data(cfg.data)
    validate_run(cfg.run)
    lo, hi = cfg.data.crop_scale
    need(0 < lo <= hi <= 1, f"data.crop_scale = {[lo, hi]}: need 0 < low <= high <= 1 (area fractions)")
    need(cfg.optim.lr >= 0, f"optim.lr = {cfg.optim.lr}: must be > 0 (or 0 for the protocol's)")
    need(0 <= cfg.optim.momentum < 1, f"optim.momentum = {cfg.optim.momentum}: must be in [0, 1)")
    need(cfg.optim.weight_decay >= 0, f"optim.weight_decay = {cfg.optim.weight_decay}: must be >= 0")
    need(cfg.run.epochs >= 0, f"run.epochs = {cfg.run.epochs}: must be >= 1 (or 0 for the protocol's)")
    need(cfg.run.eval_every >= 0 and cfg.run.stop_after >= 0, "run.eval_every and run.stop_after must be >= 0")


def fill_protocol_defaults(cfg: LinearConfig, vit: bool = True) -> LinearConfig:
    """``optim.lr = 0`` and ``run.epochs = 0`` replaced by the protocol's values (MoCo v3's lr depends on the backbone)."""
    p = cfg.probe.protocol
    lr = PROTOCOL_LR[p] if vit or p != "mocov3" else MOCOV3_RESNET_LR
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=cfg.optim.lr or lr),
                               run=dataclasses.replace(cfg.run, epochs=cfg.run.epochs or PROTOCOL_EPOCHS[p]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sdmp_fast.linear", description=__doc__.split("\n\n")[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="paper protocols: configs/eval/linear_mocov3.yaml, configs/eval/linear_dino.yaml")
    p.add_argument("--protocol", help=f"alias of {ALIASES['--protocol']}: {' or '.join(PROTOCOLS)}")
    p.add_argument("--cached-features", action="store_true", help=f"alias of probe.cached_features=true: {FAST_MODE}")
    add_common_arguments(p, ALIASES, " (configs/eval/linear_*.yaml)", "run.epochs=10")
    return p


def parse_config(argv: list[str] | None) -> tuple[argparse.Namespace, LinearConfig]:
    parser = build_parser()
    cached = ("probe.cached_features=true",) if parser.parse_intermixed_args(argv).cached_features else ()
    args, cfg = parse_command_line(parser, LinearConfig, ALIASES, argv, cached)
    validate(cfg)
    return args, cfg


# ----------------------------------------------------------------------------- data

class ProbeTrainViews(torch.utils.data.Dataset):
    """(epoch, index) -> (RandomResizedCrop + flip view ``[3, S, S]`` normalised, label), as the ``torch`` loader cuts views."""

    def __init__(self, split: Split, size: int, scale: tuple[float, float], mean, std, seed: int):
        self.split, self.size, self.scale, self.seed = split, size, tuple(scale), seed
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        path, label = self.split.samples[index]
        img = decode_rgb(path)
        g = sample_generator(self.seed, epoch, index)
        top, left, h, w = rrc_params(img.shape[-2], img.shape[-1], self.scale, (3 / 4, 4 / 3), g)
        x = TF.resized_crop(img, top, left, h, w, [self.size, self.size], antialias=True)
        if float(torch.rand((), generator=g)) < 0.5:
            x = TF.horizontal_flip(x)
        return (x.float().div_(255) - self.mean) / self.std, label


@torch.no_grad()
def extract(backbones: dict[str, torch.nn.Module], split: Split, data: EvalData, protocol: str, device: torch.device,
            dtype: torch.dtype, desc: str, progress: bool) -> dict[str, torch.Tensor]:
    """Features ``{arm: [N, D]}`` of the evaluation view of every image of ``split`` (each rank its share, then gathered)."""
    block = dist.rank_block(len(split))
    batches = eval_batches(split, block, eval_spec(data.image_size), data.mean, data.std,
                           max(1, data.batch_size // dist.get_world()), data.num_workers)
    feats: dict[str, list[torch.Tensor]] = {arm: [] for arm in backbones}
    for x, _ in tqdm(batches, desc=desc, unit="batch", disable=not (progress and dist.is_main()), dynamic_ncols=True,
                     mininterval=1.0):
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        for arm, model in backbones.items():
            with autocast_context(device, dtype):
                feats[arm].append(probe_features(model, x, protocol))
    empty = {arm: torch.zeros(0, feature_dim(m, protocol), device=device) for arm, m in backbones.items()}
    return {arm: dist.gather_rows(torch.cat(f) if f else empty[arm], len(split)) for arm, f in feats.items()}


# ----------------------------------------------------------------------------- command

def _print_result(res: dict) -> None:
    print(f"linear probe [{res['mode']}], {res['protocol']} protocol ({res['features']}, {res['feature_dim']}-d), "
          f"{res['epochs']} epochs, batch {res['batch_size']}, lr {res['lr']:g}; {res['train_images']} train / "
          f"{res['val_images']} val images{labels_note(res.get('labels'))}:\n{format_accuracy('trained', res['trained'])}\n"
          f"{format_accuracy('random init', res['random_init'])}")


def run(argv: list[str] | None = None, progress: bool = True) -> dict:
    """Parse, train the linear heads (trained and random-init backbone) and evaluate; returns the result dict."""
    from sdmp_fast.engine.precision import autocast_dtype
    from sdmp_fast.cli import start_process
    args, cfg = parse_config(argv)
    pre: Pretrained = load_pretrained(args.pretrained)
    cfg = fill_protocol_defaults(dataclasses.replace(cfg, data=fill_data_defaults(cfg.data, pre.config)),
                                 vit=is_vit(pre.trained))
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return {"config": to_dict(cfg)}
    protocol, cached = cfg.probe.protocol, cfg.probe.cached_features
    if protocol == "dino" and not is_vit(pre.trained):
        raise ConfigError(f"probe.protocol = 'dino' takes the class tokens of the last 4 blocks of a ViT; "
                          f"{pre.export['model_name']} has none: use --protocol mocov3 (pooled features)")
    epochs, base_lr = cfg.run.epochs, cfg.optim.lr
    device = start_process(cfg.run.device, cfg.run.threads)
    rank, world = dist.get_rank(), dist.get_world()
    if cfg.data.batch_size % world:
        raise ConfigError(f"data.batch_size = {cfg.data.batch_size} is not divisible by the world size {world}")
    dtype = autocast_dtype(cfg.run.precision, device)
    mode = FAST_MODE if cached else "augmented training views (RandomResizedCrop + flip): the protocol's recipe"

    out_dir = Path(cfg.run.out_dir) if cfg.run.out_dir else default_out_dir(
        pre, f"linear/{protocol}{'_cached' if cached else ''}")
    resume = ckpt.resume_point(out_dir, args.resume)
    train, val, data_name = load_eval_splits(cfg.data)
    if val is None:
        raise DataError(f"{data_name}: linear evaluation needs a val split (DATA/train/<class>/... and DATA/val/<class>/...)")
    train, labels = labelled_split(train, cfg.data)
    if len(train) < cfg.data.batch_size:
        raise ConfigError(f"data.batch_size = {cfg.data.batch_size} is larger than the training set ({len(train)} images)")
    num_classes = len(train.classes)
    backbones = {"trained": pre.trained, "random_init": pre.random_init}
    for m in backbones.values():
        m.to(device).eval().requires_grad_(False)
    dims = {arm: feature_dim(m, protocol) for arm, m in backbones.items()}

    torch.manual_seed(cfg.run.seed)
    heads = LinearHeads(dims, num_classes).to(device)
    lr = base_lr * cfg.data.batch_size / 256
    optimizer = build_probe_optimizer(heads, lr, cfg.optim.momentum, cfg.optim.weight_decay)
    model = heads
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        model = DistributedDataParallel(heads, device_ids=[device.index] if device.type == "cuda" else None)
    start_epoch = 0
    if resume is not None:
        state = ckpt.load(resume)
        for key in ("protocol", "cached_features"):
            if state["config"]["probe"][key] != getattr(cfg.probe, key):
                raise ConfigError(f"cannot resume {resume}: it has probe.{key} = {state['config']['probe'][key]!r}, "
                                  f"this run {getattr(cfg.probe, key)!r}")
        check_resume_data(resume, state["config"], cfg.data)
        if state["pretrained"] != str(pre.export_path.resolve()):
            raise ConfigError(f"cannot resume {resume}: it evaluates {state['pretrained']}, not {pre.export_path.resolve()}")
        heads.load_state_dict(state["heads"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
        if dist.is_main():
            print(f"[resume] {resume} at epoch {start_epoch}", file=sys.stderr)

    if dist.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        resolved = {"resolved": {"mode": mode, "epochs": epochs, "lr": lr, "pretrained": str(pre.export_path),
                                 "random_init": pre.random_init_how, "world": world, "device": str(device),
                                 "labels": labels}}
        (out_dir / "config.yaml").write_text(dump_yaml(cfg) + "\n" + json.dumps(resolved) + "\n")
        print(f"[linear] {pre.description}: {protocol} protocol, {mode}; {data_name} ({len(train)} train, {len(val)} val "
              f"images, {num_classes} classes{labels_note(labels)}), {epochs} epochs x batch {cfg.data.batch_size}, "
              f"lr {lr:g}, "
              f"device {device}, world {world} -> {out_dir}", file=sys.stderr)

    t0 = time.time()
    val_feats = extract(backbones, val, cfg.data, protocol, device, dtype, "features (val)", progress)
    val_labels = torch.as_tensor(val.labels, device=device)
    train_feats = train_labels = None
    if cached:
        train_feats = extract(backbones, train, cfg.data, protocol, device, dtype, "features (train)", progress)
        train_labels = torch.as_tensor(train.labels, device=device)
    feature_seconds = time.time() - t0

    def evaluate() -> dict[str, dict[str, float]]:
        counts = evaluate_heads(heads, val_feats, val_labels)
        ks = ("top1", "top5") if num_classes >= 5 else ("top1",)  # top-5 of fewer classes is always 100
        return {arm: {k: 100.0 * float(c[i]) / len(val) for i, k in enumerate(ks)} for arm, c in counts.items()}

    spe = steps_per_epoch(len(train), cfg.data.batch_size)
    bar = tqdm(total=epochs * spe, initial=start_epoch * spe, desc=f"linear {protocol}{' cached' if cached else ''}",
               unit="step", disable=not (progress and dist.is_main()), dynamic_ncols=True, mininterval=1.0)
    views = ProbeTrainViews(train, cfg.data.image_size, cfg.data.crop_scale, cfg.data.mean, cfg.data.std, cfg.run.seed)
    heads.train()
    stop_at = min(epochs, start_epoch + cfg.run.stop_after) if cfg.run.stop_after else epochs
    for epoch in range(start_epoch, stop_at):
        epoch_lr = cosine_lr(lr, epoch, epochs)
        set_lr(optimizer, epoch_lr)
        ids = rank_batches(len(train), cfg.data.batch_size, rank, world, cfg.run.seed, epoch)
        if cached:
            batches = ((torch.as_tensor(i, device=device), None) for i in ids)
        else:
            batches = torch.utils.data.DataLoader(
                views, batch_sampler=[[(epoch, i) for i in b] for b in ids], num_workers=cfg.data.num_workers,
                pin_memory=device.type == "cuda")
        loss_sum = torch.zeros(len(dims), device=device)
        for x, y in batches:
            if cached:
                feats, y = {arm: f[x] for arm, f in train_feats.items()}, train_labels[x]
            else:
                x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                y = y.to(device, non_blocking=True)
                with torch.no_grad(), autocast_context(device, dtype):
                    feats = {arm: probe_features(m, x, protocol) for arm, m in backbones.items()}
            loss_sum += probe_step(model, optimizer, feats, y)
            bar.update(1)
        losses = dist.all_reduce_mean(loss_sum / max(spe, 1)).tolist()
        line = {"epoch": epoch + 1, "lr": epoch_lr, "loss": dict(zip(dims, losses)), "elapsed_s": time.time() - t0,
                "mode": mode}
        if cfg.run.eval_every and (epoch + 1) % cfg.run.eval_every == 0 and epoch + 1 < epochs:
            line["val"] = evaluate()
        bar.set_postfix(loss=f"{losses[0]:.3f}")
        if not all(math.isfinite(v) for v in losses):
            raise ConfigError(f"non-finite probe loss at epoch {epoch + 1} ({line['loss']}): lower optim.lr")
        if dist.is_main():
            with open(out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")
            ckpt.save_atomic({"epoch": epoch + 1, "heads": heads.state_dict(), "optimizer": optimizer.state_dict(),
                              "config": to_dict(cfg), "pretrained": str(pre.export_path.resolve())},
                             ckpt.checkpoint_path(out_dir, epoch + 1))
            ckpt.prune(out_dir, keep=2)
        dist.barrier()
    bar.close()
    if stop_at < epochs:
        if dist.is_main():
            print(f"[linear] stopped after epoch {stop_at} of {epochs} (run.stop_after); continue with --resume auto "
                  f"--out {out_dir}", file=sys.stderr)
        dist.shutdown()
        return {"mode": mode, "epochs_done": stop_at, "epochs": epochs, "out_dir": str(out_dir), "stopped_early": True}
    heads.eval()
    acc = evaluate()
    result = {"mode": mode, "protocol": protocol, "features": FEATURES[protocol] if is_vit(pre.trained) else "pooled features",
              "feature_dim": dims["trained"], "pretrained": str(pre.export_path), "random_init_how": pre.random_init_how,
              "data": data_name, "train_images": len(train), "val_images": len(val), "labels": labels, "epochs": epochs,
              "batch_size": cfg.data.batch_size, "lr": lr, "base_lr": base_lr,
              "trained": acc["trained"], "random_init": acc["random_init"],
              "seconds": round(time.time() - t0, 1), "feature_seconds": round(feature_seconds, 1),
              "out_dir": str(out_dir)}
    if dist.is_main():
        with open(out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"epoch": epochs, "final": True, "val": acc, "mode": mode}) + "\n")
        (out_dir / "linear.json").write_text(json.dumps(result, indent=1))
        _print_result(result)
    dist.shutdown()
    return result


def main(argv: list[str] | None = None) -> int:
    from sdmp_fast.eval.config import cli_main
    return cli_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
