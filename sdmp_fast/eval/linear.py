"""Linear evaluation of a frozen backbone: its config, training views, features and the heads' training.

A linear classifier on frozen features (``eval/probe.py``): MoCo v3's protocol (last-layer class token;
SGD momentum 0.9, wd 0, lr 3 x batch/256 for ViTs, 90 epochs, cosine) or DINO's (class tokens of the last
4 blocks concatenated; lr 0.001 x batch/256, 100 epochs). Training views: RandomResizedCrop
(``data.crop_scale``) + horizontal flip, cut per sample with the randomness of sample i in epoch e drawn
from (seed, e, i); validation: the evaluation view of ``sdmp_fast.data.images.eval_spec``. The backbone
is frozen and deterministic in eval mode, so the validation features are computed once. With
``probe.cached_features`` (a fast mode, not the paper protocol) the training features too are computed
once from the evaluation view. The random-init twin gets its own head, trained on the same batches.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch
import torchvision.transforms.v2.functional as TF
from tqdm import tqdm

from sdmp_fast import dist
from sdmp_fast.augment.reference import rrc_params
from sdmp_fast.data.folders import DataError, Split
from sdmp_fast.data.images import SeededImages, eval_batches, eval_spec
from sdmp_fast.data.sharding import rank_batches, steps_per_epoch
from sdmp_fast.data.splits import labelled_split, load_splits
from sdmp_fast.engine.precision import autocast_context, autocast_dtype
from sdmp_fast.engine.rundir import RunDir
from sdmp_fast.eval.config import (EvalData, EvalRun, LabelledData, check_resume_data, clip_batch, validate_data,
                                   validate_run)
from sdmp_fast.eval.pretrained import Pretrained, is_vit, labels_note
from sdmp_fast.eval.probe import (PROTOCOLS, LinearHeads, build_probe_optimizer, cosine_lr, evaluate_heads,
                                  feature_dim, format_accuracy, percent_correct, probe_features, probe_step, set_lr)
from sdmp_fast.schema import FIXED, FREE, ConfigError, choices, need, to_dict

FAST_MODE = "fast mode (cached features), not the paper protocol"
AUGMENTED_MODE = "augmented training views (RandomResizedCrop + flip): the protocol's recipe"
PROTOCOL_LR = {"mocov3": 3.0, "dino": 0.001}  # per 256 images (ViT)
MOCOV3_RESNET_LR = 0.1  # main_lincls.py's default, for ResNet-50
PROTOCOL_EPOCHS = {"mocov3": 90, "dino": 100}
FEATURES = {"mocov3": "last-layer class token", "dino": "class tokens of the last 4 blocks, concatenated"}


@dataclass(frozen=True)
class LinearData(LabelledData):
    crop_scale: tuple[float, float] = field(default=(0.08, 1.0), metadata={"help": "RandomResizedCrop area fraction range of the training views (both protocols: torchvision's default)", **FIXED})


@dataclass(frozen=True)
class ProbeConfig:
    protocol: str = field(default="mocov3", metadata={"help": "mocov3: last-layer class token; dino: class tokens of the last 4 blocks, concatenated (ViT only)", **choices(*PROTOCOLS), **FIXED})
    cached_features: bool = field(default=False, metadata={"help": "fast mode, not the paper protocol: features computed once from the evaluation view, then the heads train on them", **FIXED})


@dataclass(frozen=True)
class LinearOptim:
    lr: float = field(default=0.0, metadata={"help": "SGD learning rate per 256 images (scaled by global batch / 256); 0 = the protocol's (mocov3: 3.0 for ViTs, 0.1 for ResNets; dino: 0.001)", **FIXED})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum", **FIXED})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay of the heads", **FIXED})


@dataclass(frozen=True)
class LinearRun(EvalRun):
    epochs: int = field(default=0, metadata={"help": "training epochs of the heads (cosine over them); 0 = the protocol's (mocov3: 90, dino: 100)", **FIXED})
    eval_every: int = field(default=0, metadata={"help": "also evaluate on val every N epochs (metrics.jsonl); 0 = only at the end. The final epoch's accuracy is reported", **FREE})
    stop_after: int = field(default=0, metadata={"help": "stop this invocation (with a checkpoint) after this many epochs without changing the schedule; 0 = off", **FREE})


@dataclass(frozen=True)
class LinearConfig:
    data: LinearData = LinearData()
    probe: ProbeConfig = ProbeConfig()
    optim: LinearOptim = LinearOptim()
    run: LinearRun = LinearRun()


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


def output_name(cfg: LinearConfig) -> str:
    """The default output folder under the pretraining run: ``linear/<protocol>[_cached]``."""
    return f"linear/{cfg.probe.protocol}{'_cached' if cfg.probe.cached_features else ''}"


class ProbeTrainViews(SeededImages):
    """(epoch, index) -> (RandomResizedCrop + flip view ``[3, S, S]`` normalised, label), as the ``torch`` loader cuts views."""

    def __init__(self, split: Split, size: int, scale: tuple[float, float], mean, std, seed: int):
        super().__init__(split, seed, mean, std)
        self.size, self.scale = size, tuple(scale)

    def __getitem__(self, key: tuple[int, int]):
        img, g, _, label = self.sample(key)
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
    batches = eval_batches(split, block, eval_spec(data.image_size, data.eval_interpolation), data.mean, data.std,
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


def check_probe(cfg: LinearConfig, pre: Pretrained) -> None:
    """The protocol fits the backbone (DINO's reads the class tokens of a ViT's last 4 blocks)."""
    if cfg.probe.protocol == "dino" and not is_vit(pre.trained):
        raise ConfigError(f"probe.protocol = 'dino' takes the class tokens of the last 4 blocks of a ViT; "
                          f"{pre.backbone_name} has none: use --protocol mocov3 (pooled features)")


class LinearProbe:
    """The heads of the trained and the random-init backbone, trained side by side on the same batches."""

    def __init__(self, cfg: LinearConfig, pre: Pretrained, out: RunDir, device: torch.device):
        self.cfg, self.pre, self.out, self.device = cfg, pre, out, device
        self.rank, self.world = dist.get_rank(), dist.get_world()
        if cfg.data.batch_size % self.world:
            raise ConfigError(f"data.batch_size = {cfg.data.batch_size} is not divisible by the world size {self.world}")
        self.dtype = autocast_dtype(cfg.run.precision, device)
        self.mode = FAST_MODE if cfg.probe.cached_features else AUGMENTED_MODE
        train, self.val, self.data_name = load_splits(cfg.data)
        if self.val is None:
            raise DataError(f"{self.data_name}: linear evaluation needs a val split "
                            "(DATA/train/<class>/... and DATA/val/<class>/...)")
        self.train, self.labels = labelled_split(train, cfg.data)
        cfg = self.cfg = clip_batch(cfg, len(self.train), self.world, "linear")
        self.num_classes = len(self.train.classes)
        self.backbones = {"trained": pre.trained, "random_init": pre.random_init}
        for m in self.backbones.values():
            m.to(device).eval().requires_grad_(False)
        self.dims = {arm: feature_dim(m, cfg.probe.protocol) for arm, m in self.backbones.items()}
        torch.manual_seed(cfg.run.seed)
        self.heads = LinearHeads(self.dims, self.num_classes).to(device)
        self.lr = cfg.optim.lr * cfg.data.batch_size / 256
        self.optimizer = build_probe_optimizer(self.heads, self.lr, cfg.optim.momentum, cfg.optim.weight_decay)
        self.model = self.heads
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel
            self.model = DistributedDataParallel(self.heads, device_ids=[device.index] if device.type == "cuda" else None)
        self.epoch = 0

    def resume(self, state: dict) -> None:
        """Continue from a checkpoint of the same protocol, mode, images and export."""
        where = self.out.resume
        for key in ("protocol", "cached_features"):
            if state["config"]["probe"][key] != getattr(self.cfg.probe, key):
                raise ConfigError(f"cannot resume {where}: it has probe.{key} = {state['config']['probe'][key]!r}, "
                                  f"this run {getattr(self.cfg.probe, key)!r}")
        check_resume_data(where, state["config"], self.cfg.data)
        if state["pretrained"] != str(self.pre.export_path.resolve()):
            raise ConfigError(f"cannot resume {where}: it evaluates {state['pretrained']}, not "
                              f"{self.pre.export_path.resolve()}")
        self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])

    def checkpoint(self) -> dict:
        return {"epoch": self.epoch, "heads": self.heads.state_dict(), "optimizer": self.optimizer.state_dict(),
                "config": to_dict(self.cfg), "pretrained": str(self.pre.export_path.resolve())}

    def resolved(self) -> dict:
        """The ``resolved`` line of config.yaml."""
        return {"mode": self.mode, "epochs": self.cfg.run.epochs, "lr": self.lr, "pretrained": str(self.pre.export_path),
                "random_init": self.pre.random_init_how, "world": self.world, "device": str(self.device),
                "labels": self.labels}

    def describe(self) -> str:
        c = self.cfg
        return (f"[linear] {self.pre.description}: {c.probe.protocol} protocol, {self.mode}; {self.data_name} "
                f"({len(self.train)} train, {len(self.val)} val images, {self.num_classes} classes"
                f"{labels_note(self.labels)}), {c.run.epochs} epochs x batch {c.data.batch_size}, lr {self.lr:g}, "
                f"device {self.device}, world {self.world} -> {self.out.path}")

    def extract_features(self, progress: bool) -> None:
        """The validation features (and, with cached features, the training ones), computed once."""
        args = (self.cfg.data, self.cfg.probe.protocol, self.device, self.dtype)
        self.val_feats = extract(self.backbones, self.val, *args, "features (val)", progress)
        self.val_labels = torch.as_tensor(self.val.labels, device=self.device)
        if self.cfg.probe.cached_features:
            self.train_feats = extract(self.backbones, self.train, *args, "features (train)", progress)
            self.train_labels = torch.as_tensor(self.train.labels, device=self.device)

    def evaluate(self) -> dict[str, dict[str, float]]:
        counts = evaluate_heads(self.heads, self.val_feats, self.val_labels)
        return {arm: percent_correct(c, len(self.val), self.num_classes) for arm, c in counts.items()}

    def batches(self, epoch: int):
        """(images or feature ids, labels or None) of this rank for ``epoch``."""
        c = self.cfg
        ids = rank_batches(len(self.train), c.data.batch_size, self.rank, self.world, c.run.seed, epoch)
        if c.probe.cached_features:
            return ((torch.as_tensor(i, device=self.device), None) for i in ids)
        views = ProbeTrainViews(self.train, c.data.image_size, c.data.crop_scale, c.data.mean, c.data.std, c.run.seed)
        return torch.utils.data.DataLoader(views, batch_sampler=[[(epoch, i) for i in b] for b in ids],
                                           num_workers=c.data.num_workers, pin_memory=self.device.type == "cuda")

    def train_epoch(self, epoch: int, bar, t0: float) -> dict:
        """One epoch of every head; returns its metrics line."""
        epochs, spe = self.cfg.run.epochs, steps_per_epoch(len(self.train), self.cfg.data.batch_size)
        epoch_lr = cosine_lr(self.lr, epoch, epochs)
        set_lr(self.optimizer, epoch_lr)
        loss_sum = torch.zeros(len(self.dims), device=self.device)
        for x, y in self.batches(epoch):
            if y is None:
                feats, y = {arm: f[x] for arm, f in self.train_feats.items()}, self.train_labels[x]
            else:
                x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                y = y.to(self.device, non_blocking=True)
                with torch.no_grad(), autocast_context(self.device, self.dtype):
                    feats = {arm: probe_features(m, x, self.cfg.probe.protocol) for arm, m in self.backbones.items()}
            loss_sum += probe_step(self.model, self.optimizer, feats, y)
            bar.update(1)
        losses = dist.all_reduce_mean(loss_sum / max(spe, 1)).tolist()
        line = {"epoch": epoch + 1, "lr": epoch_lr, "loss": dict(zip(self.dims, losses)),
                "elapsed_s": time.time() - t0, "mode": self.mode}
        if self.cfg.run.eval_every and (epoch + 1) % self.cfg.run.eval_every == 0 and epoch + 1 < epochs:
            line["val"] = self.evaluate()
        bar.set_postfix(loss=f"{losses[0]:.3f}")
        if not all(math.isfinite(v) for v in losses):
            raise ConfigError(f"non-finite probe loss at epoch {epoch + 1} ({line['loss']}): lower optim.lr")
        return line

    def fit(self, progress: bool) -> int:
        """Train up to ``run.epochs`` (or ``run.stop_after`` more), a metrics line and a checkpoint per epoch;
        returns the epoch reached."""
        c = self.cfg
        t0 = self.t0 = time.time()
        self.extract_features(progress)
        self.feature_seconds = time.time() - t0
        spe = steps_per_epoch(len(self.train), c.data.batch_size)
        bar = tqdm(total=c.run.epochs * spe, initial=self.epoch * spe,
                   desc=f"linear {c.probe.protocol}{' cached' if c.probe.cached_features else ''}", unit="step",
                   disable=not (progress and dist.is_main()), dynamic_ncols=True, mininterval=1.0)
        self.heads.train()
        stop_at = min(c.run.epochs, self.epoch + c.run.stop_after) if c.run.stop_after else c.run.epochs
        while self.epoch < stop_at:
            line = self.train_epoch(self.epoch, bar, t0)
            self.epoch += 1
            self.out.log(line)
            self.out.save_checkpoint(self.checkpoint(), self.epoch)
            dist.barrier()
        bar.close()
        return self.epoch

    def result(self) -> dict:
        """The final accuracy of both heads (a last metrics line) and the run's record."""
        c = self.cfg
        self.heads.eval()
        acc = self.evaluate()
        self.out.log({"epoch": c.run.epochs, "final": True, "val": acc, "mode": self.mode})
        protocol = c.probe.protocol
        return {"mode": self.mode, "protocol": protocol,
                "features": FEATURES[protocol] if is_vit(self.pre.trained) else "pooled features",
                "feature_dim": self.dims["trained"], "pretrained": str(self.pre.export_path),
                "random_init_how": self.pre.random_init_how, "data": self.data_name, "train_images": len(self.train),
                "val_images": len(self.val), "labels": self.labels, "epochs": c.run.epochs,
                "batch_size": c.data.batch_size, "lr": self.lr, "base_lr": c.optim.lr,
                "trained": acc["trained"], "random_init": acc["random_init"],
                "seconds": round(time.time() - self.t0, 1), "feature_seconds": round(self.feature_seconds, 1),
                "out_dir": str(self.out.path)}


def format_result(res: dict) -> str:
    return (f"linear probe [{res['mode']}], {res['protocol']} protocol ({res['features']}, {res['feature_dim']}-d), "
            f"{res['epochs']} epochs, batch {res['batch_size']}, lr {res['lr']:g}; {res['train_images']} train / "
            f"{res['val_images']} val images{labels_note(res.get('labels'))}:\n{format_accuracy('trained', res['trained'])}\n"
            f"{format_accuracy('random init', res['random_init'])}")
