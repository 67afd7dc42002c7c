"""The fine-tuning loop: the trained and the random-init arm fine-tuned side by side on the same batches.

Per step: timm's Mixup / CutMix on the batch, the lr of the step (warm-up, cosine), one forward of every
arm under autocast, the summed loss backward, per-arm gradient clipping, AdamW. Metrics every
``run.log_every`` steps, validation every ``run.eval_every`` epochs, a checkpoint at every epoch end and at
the end of the invocation; the data order of step s is a function of (seed, epoch, s), so a resumed run
continues on the same batches.
"""
from __future__ import annotations

import math
import time

import torch
from timm.data import Mixup, create_transform
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler
from torch import nn
from tqdm import tqdm

from sdmp_fast import dist
from sdmp_fast.data.folders import DataError
from sdmp_fast.data.sharding import rank_batches, steps_per_epoch
from sdmp_fast.data.splits import labelled_split, load_splits
from sdmp_fast.engine.precision import autocast_context, autocast_dtype
from sdmp_fast.engine.rundir import RunDir
from sdmp_fast.eval.config import check_resume_data, clip_batch
from sdmp_fast.eval.finetune import (Arms, FinetuneConfig, FolderImages, build_classifier, build_optimizer, evaluate,
                                     fix_posterize, ood_split)
from sdmp_fast.eval.pretrained import Pretrained, labels_note
from sdmp_fast.schema import ConfigError, to_dict
from sdmp_fast.streams import seed_step_streams


def mixing_on(cfg: FinetuneConfig) -> bool:
    a = cfg.aug
    return (a.mixup > 0 or a.cutmix > 0) and a.mixup_prob > 0


class FinetuneTrainer:
    """Everything one fine-tuning run holds: data, arms, optimizer, schedule, and its step."""

    def __init__(self, cfg: FinetuneConfig, pre: Pretrained, out: RunDir, device: torch.device):
        self.cfg, self.pre, self.out, self.device = cfg, pre, out, device
        self.rank, self.world = dist.get_rank(), dist.get_world()
        gb, mixing = cfg.data.batch_size, mixing_on(cfg)
        if gb % self.world or (mixing and (gb // self.world) % 2):
            raise ConfigError(f"data.batch_size = {gb}: must be divisible by the world size {self.world}"
                              + (", with an even per-rank batch (Mixup/CutMix pair row i with row B-1-i)" if mixing else ""))
        self.dtype = autocast_dtype(cfg.run.precision, device)
        train, self.val, self.data_name = load_splits(cfg.data)
        if self.val is None:
            raise DataError(f"{self.data_name}: fine-tuning needs a val split (DATA/train/<class>/... and DATA/val/<class>/...)")
        self.num_classes = len(train.classes)
        self.train, self.labels = labelled_split(train, cfg.data)
        # checked before training
        self.ood = {folder: ood_split(folder, self.train.classes, cfg.data) for folder in cfg.data.ood_val}
        cfg = self.cfg = clip_batch(cfg, len(self.train), self.world, "finetune", even=mixing)
        gb = cfg.data.batch_size
        self.spe = steps_per_epoch(len(self.train), gb)
        self.total = cfg.run.max_steps or cfg.run.epochs * self.spe
        self.warmup = min(int(round(cfg.optim.warmup_epochs * self.spe)), max(self.total - 1, 0))
        self.lr = cfg.optim.lr * gb / 512
        self._build_arms()
        self.step = 0

    def _build_arms(self) -> None:
        cfg, pre, device, a = self.cfg, self.pre, self.device, self.cfg.aug
        torch.manual_seed(cfg.run.seed)
        states = {"trained": pre.trained.state_dict()}
        if cfg.run.random_init:
            states["random_init"] = pre.random_init.state_dict()
        self.names = list(states)
        arms = Arms({name: build_classifier(pre.export, sd, self.num_classes, cfg.model.drop_path)
                     for name, sd in states.items()})
        self.arms = arms.to(device).to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.arms, cfg, self.lr)
        self.scheduler = CosineLRScheduler(self.optimizer, t_initial=self.total, lr_min=cfg.optim.min_lr,
                                           warmup_t=self.warmup, warmup_lr_init=cfg.optim.warmup_lr, t_in_epochs=False)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.model: nn.Module = self.arms
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel
            self.model = DistributedDataParallel(self.arms, device_ids=[device.index] if device.type == "cuda" else None)
        mixing = mixing_on(cfg)
        self.mixup = Mixup(mixup_alpha=a.mixup, cutmix_alpha=a.cutmix, prob=a.mixup_prob,
                           switch_prob=a.mixup_switch_prob, mode=a.mixup_mode, label_smoothing=a.smoothing,
                           num_classes=self.num_classes) if mixing else None
        self.criterion = (SoftTargetCrossEntropy() if mixing else
                          LabelSmoothingCrossEntropy(a.smoothing) if a.smoothing > 0 else nn.CrossEntropyLoss())

    def resume(self, state: dict) -> None:
        """Continue from a checkpoint of the same images, export and arms."""
        where = self.out.resume
        check_resume_data(where, state["config"], self.cfg.data)
        if state["pretrained"] != str(self.pre.export_path.resolve()):
            raise ConfigError(f"cannot resume {where}: it fine-tunes {state['pretrained']}, not "
                              f"{self.pre.export_path.resolve()}")
        if sorted(state["model"]) != sorted(self.arms.state_dict()):
            raise ConfigError(f"cannot resume {where}: its arms differ from this run's (run.random_init?)")
        self.arms.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])

    def checkpoint(self) -> dict:
        return {"step": self.step, "model": self.arms.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "config": to_dict(self.cfg),
                "pretrained": str(self.pre.export_path.resolve())}

    def resolved(self) -> dict:
        """The ``resolved`` line of config.yaml."""
        return {"steps_per_epoch": self.spe, "total_steps": self.total, "warmup_steps": self.warmup, "lr": self.lr,
                "pretrained": str(self.pre.export_path), "random_init": self.pre.random_init_how,
                "world": self.world, "device": str(self.device), "labels": self.labels,
                "ood_val": {k: len(s) for k, (s, _) in self.ood.items()}}

    def describe(self) -> str:
        return (f"[finetune] {self.pre.description}: {self.data_name} ({len(self.train)} train, {len(self.val)} val "
                f"images, {self.num_classes} classes{labels_note(self.labels)}), {self.total} steps x batch "
                f"{self.cfg.data.batch_size} ({self.total / self.spe:.2f} epochs), lr {self.lr:.3g}, arms "
                f"{', '.join(self.names)}, device {self.device}, world {self.world} -> {self.out.path}")

    def images(self) -> FolderImages:
        d, a = self.cfg.data, self.cfg.aug
        transform = fix_posterize(create_transform(
            d.image_size, is_training=True, auto_augment=a.rand_augment or None, color_jitter=a.color_jitter,
            interpolation=a.interpolation, re_prob=a.re_prob, re_mode=a.re_mode, re_count=a.re_count, mean=d.mean,
            std=d.std))
        return FolderImages(self.train, transform)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step of every arm; returns the per-arm losses ``[A]`` (detached, on the device)."""
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = y.to(self.device, non_blocking=True)
        if self.mixup is not None:
            x, y = self.mixup(x, y)
        self.scheduler.step_update(self.step)
        with autocast_context(self.device, self.dtype):
            logits = self.model(x)
        losses = torch.stack([self.criterion(z.float(), y) for z in logits.values()])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses.sum()).backward()
        if self.cfg.optim.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            for m in self.arms.arms.values():
                torch.nn.utils.clip_grad_norm_(m.parameters(), self.cfg.optim.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return losses.detach()

    def fit(self, progress: bool) -> int:
        """Train to the last step (or ``run.stop_after`` more); returns the step reached."""
        c, gb = self.cfg, self.cfg.data.batch_size
        images = self.images()
        stop_at = min(self.total, self.step + c.run.stop_after) if c.run.stop_after else self.total
        bar = tqdm(total=self.total, initial=self.step, desc="finetune", unit="step",
                   disable=not (progress and dist.is_main()), dynamic_ncols=True, mininterval=1.0)
        self.t0 = t_log = time.time()
        loss_sum, n_sum, steps_at_log = torch.zeros(len(self.names), device=self.device), 0, self.step
        self.arms.train()
        while self.step < stop_at:
            epoch, start = divmod(self.step, self.spe)
            loader = torch.utils.data.DataLoader(
                images, batch_sampler=rank_batches(len(self.train), gb, self.rank, self.world, c.run.seed, epoch, start),
                num_workers=c.data.num_workers, pin_memory=self.device.type == "cuda",
                generator=seed_step_streams(c.run.seed, self.rank, epoch, start))
            for x, y in loader:
                loss_sum += self.train_step(x, y)
                n_sum += 1
                bar.update(1)
                at_end, epoch_end = self.step >= stop_at, self.step % self.spe == 0
                if self.step % c.run.log_every == 0 or at_end or epoch_end:
                    now = time.time()
                    self.log(loss_sum / n_sum, (self.step - steps_at_log) * gb / max(now - t_log, 1e-9), epoch_end,
                             bar)
                    loss_sum, n_sum, t_log, steps_at_log = torch.zeros_like(loss_sum), 0, now, self.step
                    if epoch_end or at_end:
                        self.out.save_checkpoint(self.checkpoint(), self.step)
                        dist.barrier()
                if at_end:
                    break
        bar.close()
        return self.step

    def log(self, mean_loss: torch.Tensor, images_per_s: float, epoch_end: bool, bar) -> None:
        """One metrics line (the losses averaged over ranks; validation at the epoch ends ``run.eval_every`` names)."""
        vals = dist.all_reduce_mean(mean_loss).tolist()
        if not all(math.isfinite(v) for v in vals):
            raise ConfigError(f"non-finite loss at step {self.step} ({dict(zip(self.names, vals))}): lower optim.lr")
        line = {"step": self.step, "epoch": self.step / self.spe, "lr": self.optimizer.param_groups[0]["lr"],
                "loss": dict(zip(self.names, vals)), "images_per_s": images_per_s, "elapsed_s": time.time() - self.t0}
        every = self.cfg.run.eval_every
        if epoch_end and every and (self.step // self.spe) % every == 0 and self.step < self.total:
            line["val"] = evaluate(self.arms, self.val, self.cfg.data, self.device, self.dtype)
        self.out.log(line)
        bar.set_postfix(loss=f"{vals[0]:.3f}", lr=f"{line['lr']:.2e}")

    def record(self) -> dict:
        """What every result holds (also that of a stopped invocation)."""
        return {"pretrained": str(self.pre.export_path), "random_init_how": self.pre.random_init_how,
                "data": self.data_name, "train_images": len(self.train), "val_images": len(self.val),
                "labels": self.labels, "steps": self.step, "total_steps": self.total, "steps_per_epoch": self.spe,
                "batch_size": self.cfg.data.batch_size, "lr": self.lr, "seconds": round(time.time() - self.t0, 1),
                "out_dir": str(self.out.path)}

    def result(self) -> dict:
        """The final accuracy of every arm on val and the out-of-distribution folders (a last metrics line)."""
        result = self.record()
        val_acc = evaluate(self.arms, self.val, self.cfg.data, self.device, self.dtype)
        result.update(val_acc)
        if self.ood:
            result["ood"] = {folder: {"images": len(split), "classes": len(columns),
                                      **evaluate(self.arms, split, self.cfg.data, self.device, self.dtype, columns)}
                             for folder, (split, columns) in self.ood.items()}
        self.out.log({"step": self.step, "final": True, "val": val_acc})
        return result
