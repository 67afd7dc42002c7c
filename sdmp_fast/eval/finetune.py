"""Fine-tuning with DeiT's recipe: its config, the training views, the classifiers, evaluation and OOD folders.

The exported backbone is rebuilt from its recorded timm name and kwargs with ``drop_path_rate =
model.drop_path`` and a classifier head (``num_classes`` = the folder's classes), then its weights are
loaded (only the head is new). The recipe is DeiT's, from timm's components: AdamW (lr ``optim.lr`` x
batch / 512, wd 0.05 except on biases, norms, position embedding and class token), warm-up then cosine
per step (``timm.scheduler.CosineLRScheduler``), training views of ``timm.data.create_transform``
(RandomResizedCrop, flip, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25), Mixup 0.8 / CutMix 1.0
(``timm.data.Mixup``, label smoothing 0.1) with ``timm.loss.SoftTargetCrossEntropy``, drop-path 0.1.
Validation uses the evaluation view of ``sdmp_fast.data.images.eval_spec`` (as the linear and k-NN
evaluations). The training loop: ``eval/finetune_trainer.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageOps
from timm.optim import param_groups_weight_decay
from torch import nn

from sdmp_fast import dist
from sdmp_fast.data.folders import DataError, Split, scan_folder, verify_images
from sdmp_fast.data.images import decode_rgb, eval_batches, eval_spec
from sdmp_fast.engine.precision import autocast_context
from sdmp_fast.eval.config import EvalData, EvalRun, LabelledData, validate_data, validate_run
from sdmp_fast.eval.probe import format_accuracy, percent_correct, topk_correct
from sdmp_fast.export import backbone_from_export
from sdmp_fast.schema import FIXED, FREE, choices, need


@dataclass(frozen=True)
class FinetuneData(LabelledData):
    batch_size: int = field(default=128, metadata={"help": "global batch size (all ranks together; DeiT: 1024); per rank it must be even with Mixup/CutMix", **FIXED})
    ood_val: tuple[str, ...] = field(default=(), metadata={"help": "out-of-distribution folders evaluated at the end (Table 4: ImageNet-A, ImageNet-R; DIR/<class>/*): logits restricted to the training classes of the folder's class names", **FREE})


@dataclass(frozen=True)
class FinetuneModel:
    drop_path: float = field(default=0.1, metadata={"help": "stochastic depth rate of the rebuilt backbone", **FIXED})


@dataclass(frozen=True)
class FinetuneAug:
    rand_augment: str = field(default="rand-m9-mstd0.5-inc1", metadata={"help": "timm auto-augment string of the training views; empty = none", **FIXED})
    color_jitter: float = field(default=0.3, metadata={"help": "colour jitter strength (timm applies it only without RandAugment)", **FIXED})
    interpolation: str = field(default="bicubic", metadata={"help": "resize interpolation of the training crops", **choices("bicubic", "bilinear", "random"), **FIXED})
    re_prob: float = field(default=0.25, metadata={"help": "random erasing probability", **FIXED})
    re_mode: str = field(default="pixel", metadata={"help": "random erasing fill", **choices("pixel", "rand", "const"), **FIXED})
    re_count: int = field(default=1, metadata={"help": "random erasing boxes per image", **FIXED})
    mixup: float = field(default=0.8, metadata={"help": "Mixup alpha (0 = off)", **FIXED})
    cutmix: float = field(default=1.0, metadata={"help": "CutMix alpha (0 = off)", **FIXED})
    mixup_prob: float = field(default=1.0, metadata={"help": "probability of mixing a batch", **FIXED})
    mixup_switch_prob: float = field(default=0.5, metadata={"help": "probability of CutMix instead of Mixup when both are on", **FIXED})
    mixup_mode: str = field(default="batch", metadata={"help": "timm Mixup mode: one lambda per batch, pair or element", **choices("batch", "pair", "elem"), **FIXED})
    smoothing: float = field(default=0.1, metadata={"help": "label smoothing", **FIXED})


@dataclass(frozen=True)
class FinetuneOptim:
    lr: float = field(default=5e-4, metadata={"help": "AdamW peak learning rate per 512 images (scaled by global batch / 512)", **FIXED})
    min_lr: float = field(default=1e-5, metadata={"help": "final learning rate of the cosine (absolute)", **FIXED})
    warmup_lr: float = field(default=1e-6, metadata={"help": "learning rate at step 0 of the linear warm-up (absolute)", **FIXED})
    warmup_epochs: float = field(default=0.1, metadata={"help": "warm-up length in epochs (fractions allowed; DeiT: 5)", **FIXED})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (not on biases, norms, position embedding, class token)", **FIXED})
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={"help": "AdamW betas", **FIXED})
    eps: float = field(default=1e-8, metadata={"help": "AdamW epsilon", **FIXED})
    clip_grad: float = field(default=0.0, metadata={"help": "max global gradient norm per arm (0 = off, DeiT's default)", **FIXED})


@dataclass(frozen=True)
class FinetuneRun(EvalRun):
    epochs: int = field(default=1, metadata={"help": "training length in epochs (the default suits a CPU; the paper's DeiT recipe: 100); ignored when max_steps > 0", **FIXED})
    max_steps: int = field(default=0, metadata={"help": "training length in optimizer steps; 0 = use epochs", **FIXED})
    stop_after: int = field(default=0, metadata={"help": "stop this invocation (with a checkpoint) after this many steps without changing the schedule; 0 = off", **FREE})
    random_init: bool = field(default=True, metadata={"help": "also fine-tune the same architecture from its random initialisation, on the same batches (the baseline)", **FIXED})
    log_every: int = field(default=20, metadata={"help": "write a metrics line every N steps", **FREE})
    eval_every: int = field(default=1, metadata={"help": "evaluate on val every N epochs (0 = only at the end)", **FREE})


@dataclass(frozen=True)
class FinetuneConfig:
    data: FinetuneData = FinetuneData()
    model: FinetuneModel = FinetuneModel()
    aug: FinetuneAug = FinetuneAug()
    optim: FinetuneOptim = FinetuneOptim()
    run: FinetuneRun = FinetuneRun()


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
    batches = eval_batches(val, dist.rank_block(len(val)), eval_spec(data.image_size, data.eval_interpolation),
                           data.mean, data.std, max(1, data.batch_size // dist.get_world()), data.num_workers)
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
    return {name: percent_correct(counts[i], len(val), len(val.classes)) for i, name in enumerate(arms.arms)}


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


def format_result(res: dict) -> str:
    lines = [f"fine-tuning ({res['steps']} steps = {res['steps'] / res['steps_per_epoch']:.2f} epochs x batch "
             f"{res['batch_size']}, lr {res['lr']:.3g}); {res['train_images']} train / {res['val_images']} val images:"]
    for arm, label in (("trained", "trained"), ("random_init", "random init")):
        if arm in res:
            lines.append(format_accuracy(label, res[arm]))
    for folder, r in res.get("ood", {}).items():
        lines.append(f"out of distribution: {folder} ({r['images']} images, logits of its {r['classes']} classes):")
        lines += [format_accuracy(label, r[arm]) for arm, label in (("trained", "trained"), ("random_init", "random init"))
                  if arm in r]
    return "\n".join(lines)
