"""End-to-end fine-tuning of a pretrained backbone with DeiT's recipe (SDMP_SPEC §4.3; Table 2 of the paper).

    python -m sdmp_fast.finetune --pretrained RUN_DIR_OR_EXPORT [--config configs/eval/finetune_deit.yaml]
                                 [--data PATH] [--out DIR] [--resume auto] [--print-config]
                                 [--label-fraction F | --label-subset FILE] [--ood-val DIR ...] [section.key=value ...]

The exported backbone is rebuilt from its recorded timm name and kwargs with ``drop_path_rate =
model.drop_path`` and a classifier head (``num_classes`` = the folder's classes), then its weights are
loaded (only the head is new). The recipe is DeiT's, from timm's components: AdamW (lr ``optim.lr`` x
batch / 512, wd 0.05 except on biases, norms, position embedding and class token), warm-up then cosine
per step (``timm.scheduler.CosineLRScheduler``, from ``optim.warmup_lr`` to ``optim.min_lr``), training
views of ``timm.data.create_transform`` (RandomResizedCrop, flip, RandAugment rand-m9-mstd0.5-inc1, random
erasing 0.25), Mixup 0.8 / CutMix 1.0 (``timm.data.Mixup``, label smoothing 0.1) with
``timm.loss.SoftTargetCrossEntropy``, drop-path 0.1. Not implemented: DeiT's repeated augmentation, its
model EMA and its 10 cool-down epochs. Validation uses the evaluation view of ``sdmp_fast.data.images.eval_spec``
(as the linear and k-NN evaluations).

Semi-supervised fine-tuning (Table 3, SimCLR's protocol): ``--label-fraction F`` trains on a seeded
class-balanced share of the training images (``data.label_seed``), ``--label-subset FILE`` on the images a
file lists (SimCLR's 1 % / 10 % lists of file names, or paths relative to the train folder); validation
uses the whole val split. ``--ood-val DIR`` (Table 4) evaluates the fine-tuned arms at the end on each
ImageNet-A / ImageNet-R style folder (``DIR/<wnid>/*``, e.g. 200 classes): the logits are restricted to
the training classes of the same names, and a class folder that is no training class is an error.
ImageNet-C (1000 classes in corruption / severity folders) is not read by this option.

The same architecture from its random initialisation (``sdmp_fast/pretrained.py``) is fine-tuned side by
side on the same batches and reported beside it (``run.random_init=false`` skips it and halves the cost).
Outputs (rank 0) in ``run.out_dir`` (default ``RUN_DIR/finetune``): ``config.yaml``, ``metrics.jsonl``,
``checkpoints/`` (every epoch end and at the end; ``--resume auto``) and ``finetune.json``. Under torchrun
the arms are DDP-wrapped and the global batch ``data.batch_size`` is split over the ranks.
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
from PIL import Image, ImageOps
from timm.data import Mixup, create_transform
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler
from torch import nn
from tqdm import tqdm

from sdmp_fast.data.sharding import rank_batches, steps_per_epoch
from sdmp_fast.data.images import decode_rgb, eval_batches
from sdmp_fast import dist
from sdmp_fast.config import ConfigError
from sdmp_fast.data.folders import DataError, Split, scan_folder, verify_images
from sdmp_fast.engine import checkpoint as ckpt
from sdmp_fast.engine.precision import autocast_context
from sdmp_fast.eval.config import (EvalData, EvalRun, LabelledData, _choices, add_common_arguments, check_resume_data,
                                   dump_yaml, fill_data_defaults, parse_command_line, need, to_dict, validate_data,
                                   validate_run)
from sdmp_fast.export import backbone_from_export
from sdmp_fast.eval.pretrained import Pretrained, default_out_dir, labels_note, load_eval_splits, load_pretrained
from sdmp_fast.data.splits import labelled_split
from sdmp_fast.eval.probe import format_accuracy, topk_correct
from sdmp_fast.data.images import eval_spec
from sdmp_fast.streams import seed_step_streams


@dataclass(frozen=True)
class FinetuneData(LabelledData):
    batch_size: int = field(default=128, metadata={"help": "global batch size (all ranks together; DeiT: 1024); per rank it must be even with Mixup/CutMix"})
    ood_val: tuple[str, ...] = field(default=(), metadata={"help": "out-of-distribution folders evaluated at the end (Table 4: ImageNet-A, ImageNet-R; DIR/<class>/*): logits restricted to the training classes of the folder's class names"})


@dataclass(frozen=True)
class FinetuneModel:
    drop_path: float = field(default=0.1, metadata={"help": "stochastic depth rate of the rebuilt backbone"})


@dataclass(frozen=True)
class FinetuneAug:
    rand_augment: str = field(default="rand-m9-mstd0.5-inc1", metadata={"help": "timm auto-augment string of the training views; empty = none"})
    color_jitter: float = field(default=0.3, metadata={"help": "colour jitter strength (timm applies it only without RandAugment)"})
    interpolation: str = field(default="bicubic", metadata={"help": "resize interpolation of the training crops", **_choices("bicubic", "bilinear", "random")})
    re_prob: float = field(default=0.25, metadata={"help": "random erasing probability"})
    re_mode: str = field(default="pixel", metadata={"help": "random erasing fill", **_choices("pixel", "rand", "const")})
    re_count: int = field(default=1, metadata={"help": "random erasing boxes per image"})
    mixup: float = field(default=0.8, metadata={"help": "Mixup alpha (0 = off)"})
    cutmix: float = field(default=1.0, metadata={"help": "CutMix alpha (0 = off)"})
    mixup_prob: float = field(default=1.0, metadata={"help": "probability of mixing a batch"})
    mixup_switch_prob: float = field(default=0.5, metadata={"help": "probability of CutMix instead of Mixup when both are on"})
    mixup_mode: str = field(default="batch", metadata={"help": "timm Mixup mode: one lambda per batch, pair or element", **_choices("batch", "pair", "elem")})
    smoothing: float = field(default=0.1, metadata={"help": "label smoothing"})


@dataclass(frozen=True)
class FinetuneOptim:
    lr: float = field(default=5e-4, metadata={"help": "AdamW peak learning rate per 512 images (scaled by global batch / 512)"})
    min_lr: float = field(default=1e-5, metadata={"help": "final learning rate of the cosine (absolute)"})
    warmup_lr: float = field(default=1e-6, metadata={"help": "learning rate at step 0 of the linear warm-up (absolute)"})
    warmup_epochs: float = field(default=0.1, metadata={"help": "warm-up length in epochs (fractions allowed; DeiT: 5)"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (not on biases, norms, position embedding, class token)"})
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={"help": "AdamW betas"})
    eps: float = field(default=1e-8, metadata={"help": "AdamW epsilon"})
    clip_grad: float = field(default=0.0, metadata={"help": "max global gradient norm per arm (0 = off, DeiT's default)"})


@dataclass(frozen=True)
class FinetuneRun(EvalRun):
    epochs: int = field(default=1, metadata={"help": "training length in epochs (the default suits a CPU; the paper's DeiT recipe: 100); ignored when max_steps > 0"})
    max_steps: int = field(default=0, metadata={"help": "training length in optimizer steps; 0 = use epochs"})
    stop_after: int = field(default=0, metadata={"help": "stop this invocation (with a checkpoint) after this many steps without changing the schedule; 0 = off"})
    random_init: bool = field(default=True, metadata={"help": "also fine-tune the same architecture from its random initialisation, on the same batches (the baseline)"})
    log_every: int = field(default=20, metadata={"help": "write a metrics line every N steps"})
    eval_every: int = field(default=1, metadata={"help": "evaluate on val every N epochs (0 = only at the end)"})


@dataclass(frozen=True)
class FinetuneConfig:
    data: FinetuneData = FinetuneData()
    model: FinetuneModel = FinetuneModel()
    aug: FinetuneAug = FinetuneAug()
    optim: FinetuneOptim = FinetuneOptim()
    run: FinetuneRun = FinetuneRun()


ALIASES = {"--data": "data.path", "--loader": "data.loader", "--out": "run.out_dir",
           "--label-fraction": "data.label_fraction", "--label-subset": "data.label_subset", "--ood-val": "data.ood_val"}


def validate(cfg: FinetuneConfig) -> None:
    validate_data(cfg.data)
    validate_run(cfg.run)
    a, o, r = cfg.aug, cfg.optim, cfg.run
    need(0 <= cfg.model.drop_path < 1, f"model.drop_path = {cfg.model.drop_path}: must be in [0, 1)")
    need(0 <= a.re_prob <= 1 and a.re_count >= 1, "aug.re_prob must be in [0, 1] and aug.re_count >= 1")
    need(a.mixup >= 0 and a.cutmix >= 0, "aug.mixup and aug.cutmix must be >= 0 (0 = off)")
    need(0 <= a.mixup_prob <= 1 and 0 <= a.mixup_switch_prob <= 1, "aug.mixup_prob and aug.mixup_switch_prob must be in [0, 1]")
    need(0 <= a.smoothing < 1, f"aug.smoothing = {a.smoothing}: must be in [0, 1)")
    need(o.lr > 0 and o.min_lr >= 0 and o.warmup_lr >= 0, "optim.lr must be > 0, optim.min_lr and optim.warmup_lr >= 0")
    need(o.warmup_epochs >= 0 and o.weight_decay >= 0 and o.clip_grad >= 0,
         "optim.warmup_epochs, optim.weight_decay and optim.clip_grad must be >= 0")
    need(r.epochs >= 1, f"run.epochs = {r.epochs}: must be >= 1")
    need(r.max_steps >= 0 and r.stop_after >= 0, "run.max_steps and run.stop_after must be >= 0")
    need(r.log_every >= 1 and r.eval_every >= 0, "run.log_every must be >= 1 and run.eval_every >= 0")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sdmp_fast.finetune", description=__doc__.split("\n\n")[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="the paper's recipe: configs/eval/finetune_deit.yaml")
    add_common_arguments(p, ALIASES, " (configs/eval/finetune_deit.yaml)", "run.epochs=100")
    p.add_argument("--ood-val", nargs="+", metavar="DIR",
                   help=f"alias of {ALIASES['--ood-val']}: ImageNet-A / -R style folders evaluated at the end (Table 4)")
    return p


def parse_config(argv: list[str] | None) -> tuple[argparse.Namespace, FinetuneConfig]:
    args, cfg = parse_command_line(build_parser(), FinetuneConfig, ALIASES, argv)
    validate(cfg)
    return args, cfg


# ----------------------------------------------------------------------------- pieces

class FolderImages(torch.utils.data.Dataset):
    """index -> (transform(PIL RGB image), label) over a scanned split; decoding errors name the file."""

    def __init__(self, split: Split, transform):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        path, label = self.split.samples[index]
        img = Image.fromarray(decode_rgb(path).permute(1, 2, 0).numpy())
        return self.transform(img), label


def _posterize(img, bits_to_keep: int, **_):
    """timm's posterize op, except that keeping 0 bits gives a black image (Pillow < 13's result; Pillow 13 raises)."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep < 1:
        return img.point(lambda _: 0)
    return ImageOps.posterize(img, bits_to_keep)


def fix_posterize(transform):
    """Give the RandAugment posterize ops of a timm transform ``_posterize``; returns the transform.

    timm's PosterizeIncreasing keeps ``4 - int(0.4 * magnitude)`` bits, 0 at magnitude 10, which
    rand-m9-mstd0.5 reaches (magnitude ~ N(9, 0.5) clipped to [0, 10]); Pillow 13's ``ImageOps.posterize``
    rejects 0 bits, older Pillow (DeiT's) returned a black image.
    """
    for t in getattr(transform, "transforms", ()):
        for op in getattr(t, "ops", ()):
            if "Posterize" in getattr(op, "name", ""):
                op.aug_fn = _posterize
    return transform


class Arms(nn.Module):
    """Several classifiers on the same input: ``x -> {arm: logits [B, C]}`` (one DDP module for all)."""

    def __init__(self, models: dict[str, nn.Module]):
        super().__init__()
        self.arms = nn.ModuleDict(models)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: m(x) for name, m in self.arms.items()}


def build_classifier(export: dict, state_dict: dict, num_classes: int, drop_path: float) -> nn.Module:
    """The export's architecture with ``drop_path`` and a new ``num_classes`` head, backbone weights from ``state_dict``."""
    return backbone_from_export({**export, "state_dict": state_dict}, drop_path_rate=drop_path, num_classes=num_classes)


def build_optimizer(arms: Arms, cfg: FinetuneConfig, lr: float) -> torch.optim.AdamW:
    """AdamW over every arm; no weight decay on 1-D parameters and the model's ``no_weight_decay()`` (timm's grouping)."""
    from timm.optim import param_groups_weight_decay
    groups = []
    for m in arms.arms.values():
        skip = m.no_weight_decay() if hasattr(m, "no_weight_decay") else ()
        groups += param_groups_weight_decay(m, cfg.optim.weight_decay, no_weight_decay_list=skip)
    return torch.optim.AdamW(groups, lr=lr, betas=cfg.optim.betas, eps=cfg.optim.eps)


@torch.no_grad()
def evaluate(arms: Arms, val: Split, data: EvalData, device: torch.device, dtype: torch.dtype,
             columns: list[int] | None = None) -> dict[str, dict[str, float]]:
    """Top-1 / top-5 (%) of every arm on the evaluation view of ``val`` (each rank its share; counts summed).

    ``columns``: the logits of these classes only, in ``val``'s label order (an out-of-distribution folder whose
    classes are some of the training classes)."""
    was = arms.training
    arms.eval()
    batches = eval_batches(val, dist.rank_block(len(val)), eval_spec(data.image_size), data.mean, data.std,
                           max(1, data.batch_size // dist.get_world()), data.num_workers)
    counts = torch.zeros(len(arms.arms), 2, device=device)
    for x, y in batches:
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        with autocast_context(device, dtype):
            logits = arms(x)
        if columns is not None:
            logits = {name: z[:, columns] for name, z in logits.items()}
        counts += torch.stack([topk_correct(z.float(), y) for z in logits.values()])
    counts = dist.all_reduce_mean(counts) * dist.get_world()
    arms.train(was)
    n = max(len(val), 1)
    out = {}
    for i, name in enumerate(arms.arms):
        out[name] = {"top1": 100.0 * float(counts[i, 0]) / n}
        if len(val.classes) >= 5:
            out[name]["top5"] = 100.0 * float(counts[i, 1]) / n
    return out


def ood_split(folder: str, classes: tuple[str, ...], data: EvalData) -> tuple[Split, list[int]]:
    """An out-of-distribution folder (``DIR/<class>/*``) scanned and verified, and the training-class index of each
    of its classes (matched by folder name, e.g. WordNet ids)."""
    split, _ = scan_folder(Path(folder).expanduser(), data.skip_corrupt)
    index = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in split.classes if c not in index]
    if unknown:
        raise DataError(f"--ood-val {folder}: {len(unknown)} class folder(s) that are not training classes: "
                        f"{', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}; its folders must be named as "
                        f"the training classes (e.g. WordNet ids such as {classes[0]})")
    split, _ = verify_images(split, data.cache_dir, data.skip_corrupt, progress=dist.is_main())
    return split, [index[c] for c in split.classes]


def _print_result(res: dict) -> None:
    lines = [f"fine-tuning ({res['steps']} steps = {res['steps'] / res['steps_per_epoch']:.2f} epochs x batch "
             f"{res['batch_size']}, lr {res['lr']:.3g}); {res['train_images']} train / {res['val_images']} val images:"]
    for arm, label in (("trained", "trained"), ("random_init", "random init")):
        if arm in res:
            lines.append(format_accuracy(label, res[arm]))
    for folder, r in res.get("ood", {}).items():
        lines.append(f"out of distribution: {folder} ({r['images']} images, logits of its {r['classes']} classes):")
        lines += [format_accuracy(label, r[arm]) for arm, label in (("trained", "trained"), ("random_init", "random init"))
                  if arm in r]
    print("\n".join(lines))


# ----------------------------------------------------------------------------- command

def run(argv: list[str] | None = None, progress: bool = True) -> dict:
    """Parse, fine-tune (trained and random-init arms) and evaluate; returns the result dict."""
    from sdmp_fast.engine.precision import autocast_dtype
    from sdmp_fast.cli import start_process

    args, cfg = parse_config(argv)
    pre: Pretrained = load_pretrained(args.pretrained)
    cfg = dataclasses.replace(cfg, data=fill_data_defaults(cfg.data, pre.config))
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return {"config": to_dict(cfg)}
    device = start_process(cfg.run.device, cfg.run.threads)
    rank, world = dist.get_rank(), dist.get_world()
    gb, a = cfg.data.batch_size, cfg.aug
    mixing = (a.mixup > 0 or a.cutmix > 0) and a.mixup_prob > 0
    if gb % world or (mixing and (gb // world) % 2):
        raise ConfigError(f"data.batch_size = {gb}: must be divisible by the world size {world}"
                          + (", with an even per-rank batch (Mixup/CutMix pair row i with row B-1-i)" if mixing else ""))
    dtype = autocast_dtype(cfg.run.precision, device)

    out_dir = Path(cfg.run.out_dir) if cfg.run.out_dir else default_out_dir(pre, "finetune")
    resume = ckpt.resume_point(out_dir, args.resume)
    train, val, data_name = load_eval_splits(cfg.data)
    if val is None:
        raise DataError(f"{data_name}: fine-tuning needs a val split (DATA/train/<class>/... and DATA/val/<class>/...)")
    num_classes = len(train.classes)
    train, labels = labelled_split(train, cfg.data)
    ood = {folder: ood_split(folder, train.classes, cfg.data) for folder in cfg.data.ood_val}  # checked before training
    spe = steps_per_epoch(len(train), gb)
    if spe < 1:
        raise ConfigError(f"data.batch_size = {gb} is larger than the training set ({len(train)} images)")
    total = cfg.run.max_steps or cfg.run.epochs * spe
    warmup = min(int(round(cfg.optim.warmup_epochs * spe)), max(total - 1, 0))
    lr = cfg.optim.lr * gb / 512

    torch.manual_seed(cfg.run.seed)
    states = {"trained": pre.trained.state_dict()}
    if cfg.run.random_init:
        states["random_init"] = pre.random_init.state_dict()
    arms = Arms({name: build_classifier(pre.export, sd, num_classes, cfg.model.drop_path) for name, sd in states.items()})
    arms = arms.to(device).to(memory_format=torch.channels_last)
    optimizer = build_optimizer(arms, cfg, lr)
    scheduler = CosineLRScheduler(optimizer, t_initial=total, lr_min=cfg.optim.min_lr, warmup_t=warmup,
                                  warmup_lr_init=cfg.optim.warmup_lr, t_in_epochs=False)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    model: nn.Module = arms
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        model = DistributedDataParallel(arms, device_ids=[device.index] if device.type == "cuda" else None)
    mixup = Mixup(mixup_alpha=a.mixup, cutmix_alpha=a.cutmix, prob=a.mixup_prob, switch_prob=a.mixup_switch_prob,
                  mode=a.mixup_mode, label_smoothing=a.smoothing, num_classes=num_classes) if mixing else None
    criterion = (SoftTargetCrossEntropy() if mixing else
                 LabelSmoothingCrossEntropy(a.smoothing) if a.smoothing > 0 else nn.CrossEntropyLoss())

    step = 0
    if resume is not None:
        state = ckpt.load(resume)
        check_resume_data(resume, state["config"], cfg.data)
        if state["pretrained"] != str(pre.export_path.resolve()):
            raise ConfigError(f"cannot resume {resume}: it fine-tunes {state['pretrained']}, not {pre.export_path.resolve()}")
        if sorted(state["model"]) != sorted(arms.state_dict()):
            raise ConfigError(f"cannot resume {resume}: its arms differ from this run's (run.random_init?)")
        arms.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        if dist.is_main():
            print(f"[resume] {resume} at step {step}", file=sys.stderr)

    if dist.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        resolved = {"resolved": {"steps_per_epoch": spe, "total_steps": total, "warmup_steps": warmup, "lr": lr,
                                 "pretrained": str(pre.export_path), "random_init": pre.random_init_how,
                                 "world": world, "device": str(device), "labels": labels,
                                 "ood_val": {k: len(s) for k, (s, _) in ood.items()}}}
        (out_dir / "config.yaml").write_text(dump_yaml(cfg) + "\n" + json.dumps(resolved) + "\n")
        print(f"[finetune] {pre.description}: {data_name} ({len(train)} train, {len(val)} val images, {num_classes} "
              f"classes{labels_note(labels)}), {total} steps x batch {gb} ({total / spe:.2f} epochs), lr {lr:.3g}, arms "
              f"{', '.join(states)}, device {device}, world {world} -> {out_dir}", file=sys.stderr)

    transform = fix_posterize(create_transform(cfg.data.image_size, is_training=True, auto_augment=a.rand_augment or None,
                                 color_jitter=a.color_jitter, interpolation=a.interpolation, re_prob=a.re_prob,
                                 re_mode=a.re_mode, re_count=a.re_count, mean=cfg.data.mean, std=cfg.data.std))
    images = FolderImages(train, transform)
    stop_at = min(total, step + cfg.run.stop_after) if cfg.run.stop_after else total
    bar = tqdm(total=total, initial=step, desc="finetune", unit="step", disable=not (progress and dist.is_main()),
               dynamic_ncols=True, mininterval=1.0)
    metrics = out_dir / "metrics.jsonl"
    t0 = t_log = time.time()
    loss_sum, n_sum, steps_at_log = torch.zeros(len(states), device=device), 0, step
    val_acc: dict | None = None
    arms.train()
    while step < stop_at:
        epoch, start = divmod(step, spe)
        g = seed_step_streams(cfg.run.seed, rank, epoch, start)
        loader = torch.utils.data.DataLoader(
            images, batch_sampler=rank_batches(len(train), gb, rank, world, cfg.run.seed, epoch, start),
            num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda", generator=g)
        for x, y in loader:
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            if mixup is not None:
                x, y = mixup(x, y)
            scheduler.step_update(step)
            with autocast_context(device, dtype):
                logits = model(x)
            losses = torch.stack([criterion(z.float(), y) for z in logits.values()])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses.sum()).backward()
            if cfg.optim.clip_grad > 0:
                scaler.unscale_(optimizer)
                for m in arms.arms.values():
                    torch.nn.utils.clip_grad_norm_(m.parameters(), cfg.optim.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            loss_sum += losses.detach()
            n_sum += 1
            bar.update(1)
            at_end, epoch_end = step >= stop_at, step % spe == 0
            if step % cfg.run.log_every == 0 or at_end or epoch_end:
                vals = (dist.all_reduce_mean(loss_sum) / n_sum).tolist()
                if not all(math.isfinite(v) for v in vals):
                    raise ConfigError(f"non-finite loss at step {step} ({dict(zip(states, vals))}): lower optim.lr")
                now = time.time()
                line = {"step": step, "epoch": step / spe, "lr": optimizer.param_groups[0]["lr"],
                        "loss": dict(zip(states, vals)),
                        "images_per_s": (step - steps_at_log) * gb / max(now - t_log, 1e-9), "elapsed_s": now - t0}
                if epoch_end and cfg.run.eval_every and (step // spe) % cfg.run.eval_every == 0 and step < total:
                    line["val"] = evaluate(arms, val, cfg.data, device, dtype)
                if dist.is_main():
                    with open(metrics, "a") as f:
                        f.write(json.dumps(line) + "\n")
                bar.set_postfix(loss=f"{vals[0]:.3f}", lr=f"{line['lr']:.2e}")
                loss_sum, n_sum, t_log, steps_at_log = torch.zeros_like(loss_sum), 0, now, step
                if epoch_end or at_end:
                    if dist.is_main():
                        ckpt.save_atomic({"step": step, "model": arms.state_dict(), "optimizer": optimizer.state_dict(),
                                          "scaler": scaler.state_dict(), "config": to_dict(cfg),
                                          "pretrained": str(pre.export_path.resolve())},
                                         ckpt.checkpoint_path(out_dir, step))
                        ckpt.prune(out_dir, keep=2)
                    dist.barrier()
            if at_end:
                break
    bar.close()
    result = {"pretrained": str(pre.export_path), "random_init_how": pre.random_init_how, "data": data_name,
              "train_images": len(train), "val_images": len(val), "labels": labels, "steps": step, "total_steps": total,
              "steps_per_epoch": spe, "batch_size": gb, "lr": lr, "seconds": round(time.time() - t0, 1),
              "out_dir": str(out_dir)}
    if step < total:
        if dist.is_main():
            print(f"[finetune] stopped after step {step} of {total} (run.stop_after); continue with --resume auto "
                  f"--out {out_dir}", file=sys.stderr)
        dist.shutdown()
        return {**result, "stopped_early": True}
    val_acc = evaluate(arms, val, cfg.data, device, dtype)
    result.update(val_acc)
    if ood:
        result["ood"] = {folder: {"images": len(split), "classes": len(columns),
                                  **evaluate(arms, split, cfg.data, device, dtype, columns)}
                         for folder, (split, columns) in ood.items()}
    if dist.is_main():
        with open(metrics, "a") as f:
            f.write(json.dumps({"step": step, "final": True, "val": val_acc}) + "\n")
        (out_dir / "finetune.json").write_text(json.dumps(result, indent=1))
        _print_result(result)
    dist.shutdown()
    return result


def main(argv: list[str] | None = None) -> int:
    from sdmp_fast.eval.config import cli_main
    return cli_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
