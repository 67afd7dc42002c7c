"""The training loop: steps, schedules, logging, checkpoints and exact resume.

Per step (``step_body``): lr (and, with ``optim.weight_decay_end``, the weight decay of the decayed
parameter groups) from the schedule tables, the method's own tables (``Method.set_step``: DINO's
teacher temperature), EMA (MoCo v3: before the forward), forward under autocast, backward, gradient
clipping (``optim.clip_mode``: global norm, or DINO's per-parameter rule), the method's gradient hook
(``Method.after_backward``: DINO's frozen last layer), optimizer step (DINO-style methods: EMA after it).

No host synchronisation inside the step (tests/engine/test_sync_free.py runs real steps under a guard
that raises on every host read): the schedules are device tables indexed by a device step counter
(``step_t``, advanced by the step itself); AdamW takes its lr as a device tensor (``fused``, and
``capturable`` on CUDA) and the weight-decay schedule is applied by the trainer as AdamW's decoupled
decay from device scalars (LARS/SGD keep host floats, read from Python lists: no sync either); the EMA
is three multi-tensor ops with a device weight (``ema_lerp_``); the shared random decisions (mixing op,
view swap) come from a host stream without tensors, or, with ``run.cuda_graph``, from a device
generator. Device values (loss, metrics) are summed on the device and read only every
``run.log_every`` steps; the data-stall figures (host wait for each batch, on CUDA the device's gaps
between steps from events: ``engine/telemetry.py``) are read there too. ``run.cuda_graph`` captures
``step_body`` in one CUDA graph (``engine/graph.py``); ``run.compile`` compiles the backbones in place
(``SDMP_COMPILE_BACKEND`` chooses the backend, default inductor).

Distributed (torchrun, world > 1): the method is wrapped in DDP (gradients of the student averaged
over ranks; the teacher has no gradient and is updated identically on every rank by the EMA;
``broadcast_buffers=False``: BatchNorm statistics are synchronised by the layers themselves). Logged
values are averaged over ranks at logging points; wall-clock decisions (timed checkpoints) are taken by
rank 0 and broadcast there, so every rank acts at the same step; checkpoints are written by rank 0
and hold every rank's random streams (the per-rank streams differ).

Checkpoints are written atomically at epoch ends, every ``run.checkpoint_minutes`` (checked at
logging points), when ``run.stop_after`` ends the invocation, on preemption (SIGTERM / SIGUSR1, agreed
across ranks: ``engine/preempt.py``) and at the end, always after the non-finite check of the logs. Each holds the method
(student, teacher, heads, BN buffers, DINO's centre), optimizer, grad scaler, random streams and the global step;
the loader's position is (epoch, step in epoch) = divmod(step, steps per epoch), and the ``torch``
loader's per-sample randomness is a function of (seed, epoch, index), so a resumed run continues
exactly.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sdmp_fast import dist
from sdmp_fast.config import Config, Resolved, to_dict
from sdmp_fast.engine.ema import ema_lerp_
from sdmp_fast.engine.optim import build_optimizer, clip_grad_per_param_
from sdmp_fast.engine.precision import NonFiniteLoss, autocast_context, autocast_dtype
from sdmp_fast.engine.preempt import Preemption, after_step, fault
from sdmp_fast.engine.rundir import RunDir
from sdmp_fast.engine.telemetry import Board, meter_for, postfix
from sdmp_fast.methods.base import Method
from sdmp_fast.schedules import at, cosine_to, warmup_cosine
from sdmp_fast.schema import ConfigError
from sdmp_fast.streams import StepRandom, rank_reseed


@dataclass
class FitResult:
    steps_done: int
    total_steps: int
    seconds: float
    images_per_s: float
    last_logs: dict
    stopped_early: bool
    preempted: str | None = None  # the signal that stopped the run (its checkpoint is written)
    data_wait: dict = field(default_factory=dict)  # engine/telemetry.py's figures over the logged intervals


class Trainer:
    def __init__(self, cfg: Config, res: Resolved, method: Method, loader, device: torch.device,
                 out_dir: str | Path | RunDir):
        self.cfg, self.res, self.method, self.loader = cfg, res, method, loader
        self.device = device
        self.rundir = out_dir if isinstance(out_dir, RunDir) else RunDir(out_dir)  # metrics.jsonl, checkpoints/
        self.dtype = autocast_dtype(cfg.run.precision, device)
        self._check_fast_options(cfg, res, device)
        # AdamW reads lr (and the decoupled weight decay) from device tensors; LARS/SGD take host floats
        # (not with fp16: GradScaler may skip a step on the host, and the trainer's decay would still act)
        self.device_schedules = cfg.optim.name == "adamw" and self.dtype != torch.float16
        self.optimizer = build_optimizer(cfg, method.param_groups(), device if self.device_schedules else None)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        # per-step tables (float64, host) ...
        self.lr = warmup_cosine(res.lr, cfg.optim.min_lr, res.total_steps, res.warmup_steps)
        self.momentum = cosine_to(cfg.method.momentum, cfg.method.momentum_final, res.total_steps)
        # DINO's weight-decay schedule: half-cosine over all steps, no warm-up; None = constant
        self.wd = (warmup_cosine(cfg.optim.weight_decay, cfg.optim.weight_decay_end, res.total_steps, 0)
                   if cfg.optim.weight_decay_end >= 0 else None)
        # ... as Python lists for the host (logs, LARS/SGD) and as device tables indexed by the device step
        self._host = {"lr": self.lr.tolist(), "momentum": self.momentum.tolist(),
                      "wd": self.wd.tolist() if self.wd is not None else None}
        self.step_t = torch.zeros((), dtype=torch.int64, device=device)
        self._lr_t = self.lr.to(device, torch.float32)
        self._ema_w_t = (1.0 - self.momentum).to(device, torch.float32)  # lerp weight 1 - m, rounded once
        self._wd_t = self.wd.to(device, torch.float32) if self.wd is not None else None
        if self.device_schedules and self.wd is not None:
            # the scheduled decay is applied by the trainer (decoupled, AdamW's p *= 1 - lr * wd) from the
            # device tables; the optimizer's own weight decay is 0 for those groups
            for group in self.optimizer.param_groups:
                if group.get("apply_wd", True):
                    group["weight_decay"] = 0.0
        method.prepare(res)
        self.rng = StepRandom.create(cfg.run.seed, res.rank, device)
        if cfg.run.compile:
            backend = os.environ.get("SDMP_COMPILE_BACKEND", "inductor")
            for module in method.compile_targets():
                module.compile(backend=backend)
        self.model = self._wrap(method, device)
        self.step = 0
        self.teacher_params, self.student_params = method.ema_pairs()
        self.last_checkpoint: Path | None = None
        self.preempt = Preemption()
        self.graph = None
        if cfg.run.cuda_graph:
            from sdmp_fast.engine.graph import GraphStep
            self.graph = GraphStep(self)

    @staticmethod
    def _check_fast_options(cfg: Config, res: Resolved, device: torch.device) -> None:
        """run.cuda_graph's needs that only the run knows (config.validate checks the rest)."""
        if not cfg.run.cuda_graph:
            return
        if device.type != "cuda":
            raise ConfigError(f"run.cuda_graph = true needs a CUDA device; this run is on {device}: set run.cuda_graph=false")
        if res.world > 1:
            raise ConfigError(f"run.cuda_graph = true is implemented for one process; this run has {res.world} ranks "
                              "(DDP's bucket all-reduce would have to be captured too): set run.cuda_graph=false "
                              "or run.compile=true")

    @staticmethod
    def _wrap(method: Method, device: torch.device) -> torch.nn.Module:
        """DDP over the method's trainable parameters when world > 1 (one forward per step: the whole
        method, so several student forwards per step are fine); the method itself in one process."""
        if dist.get_world() == 1:
            return method
        from torch.nn.parallel import DistributedDataParallel
        ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
        # BatchNorm statistics are synchronised by the layers, the centre by an all-reduce: no buffer
        # broadcast per forward (torch >= 2.14 names the switch forward_sync_buffers)
        import inspect
        key = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
               else "broadcast_buffers")
        return DistributedDataParallel(method, device_ids=ids, **{key: False})

    # ------------------------------------------------------------------ state

    def state_dict(self, rng_ranks: list[dict] | None = None) -> dict:
        """Everything a resume needs; ``rng_ranks``: every rank's streams (default: gathered now, a collective)."""
        return {
            "step": self.step,
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": self.rng.state_dict(),
            "rng_ranks": rng_ranks if rng_ranks is not None else self._rank_rng_states(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "config": to_dict(self.cfg),
            "total_steps": self.res.total_steps,
            "world": self.res.world,
        }

    def load_state_dict(self, state: dict) -> None:
        old = state.get("config", {})
        for key in (("method", "name"), ("model", "backbone"), ("sdmp", "enabled"), ("sdmp", "variant")):
            was = old.get(key[0], {}).get(key[1])
            now = getattr(getattr(self.cfg, key[0]), key[1])
            if was is not None and (list(was) if isinstance(was, tuple) else was) != (list(now) if isinstance(now, tuple) else now):
                raise ValueError(f"cannot resume: the checkpoint has {key[0]}.{key[1]} = {was!r}, this run {now!r}")
        self.method.load_state_dict(state["method"])
        # the checkpoint's param groups replace ours whole: keep this run's implementation switches (fused /
        # capturable differ between CPU and CUDA) and weight decay (0 where the trainer applies the schedule)
        kept = [{k: g[k] for k in ("fused", "foreach", "capturable", "weight_decay") if k in g}
                for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, own in zip(self.optimizer.param_groups, kept):
            group.update(own)
            if self.device_schedules:  # lr tensors on this run's device again (a checkpoint holds CPU copies)
                group["lr"] = torch.zeros((), device=self.device)
        self.scaler.load_state_dict(state["scaler"])
        ranks = state.get("rng_ranks")
        if ranks is not None and len(ranks) == self.res.world:
            self.rng.load_state_dict(ranks[self.res.rank])
        else:
            # another world size: the shared stream continues; the per-rank stream is re-derived from
            # (seed, rank, step), so ranks still differ (the run continues, not bit for bit)
            self.rng.load_state_dict(state["rng"])
            self.rng.local.manual_seed(rank_reseed(self.cfg.run.seed, self.res.rank, int(state["step"])))
            if dist.is_main():
                print(f"[resume] checkpoint written by {len(ranks) if ranks else 1} rank(s), now {self.res.world}: "
                      "the per-rank random streams are re-seeded", file=sys.stderr)
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = int(state["step"])

    def _rank_rng_states(self) -> list[dict]:
        """Every rank's random streams (a collective: all ranks call ``save_checkpoint`` at the same step)."""
        mine = self.rng.state_dict()
        return dist.all_gather_object({k: v.cpu() if torch.is_tensor(v) else v for k, v in mine.items()})

    def save_checkpoint(self) -> Path | None:
        """Called by every rank at the same step (the streams are gathered); rank 0 alone builds and writes the state."""
        rng_ranks = self._rank_rng_states()
        if not dist.is_main():
            return None
        path = self.rundir.save_checkpoint(self.state_dict(rng_ranks), self.step, fault_step=self.step)
        self.last_checkpoint = path
        return path

    # ------------------------------------------------------------------ step

    def train_step(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """One optimizer step on ``views``; returns the step's logs as device tensors (nothing read)."""
        if self.graph is not None:
            return self.graph(views)
        self.step_t.fill_(self.step)
        logs = self.step_body(views, self.step)
        self.step += 1
        return logs

    def step_body(self, views: list[torch.Tensor], i: int) -> dict[str, torch.Tensor]:
        """The step without host synchronisation: what ``run.cuda_graph`` captures.

        Every value that changes from step to step is read on the device at ``self.step_t`` (which this
        function advances): lr, EMA weight, weight decay, DINO's teacher temperature. ``i`` is the host
        step, used only for host decisions that are constant within a ``Method.phase`` (DINO's frozen
        last layer), for LARS/SGD's host lr, and for fault injection (tests).
        """
        st = self.step_t
        if self.device_schedules:
            lr = at(self._lr_t, st)
            for group in self.optimizer.param_groups:
                group["lr"].copy_(lr)
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = self._host["lr"][i]
                if self.wd is not None and group.get("apply_wd", True):
                    group["weight_decay"] = self._host["wd"][i]
        self.method.set_step(i, st)
        ema_w = at(self._ema_w_t, st)
        if self.method.ema_before_forward:
            ema_lerp_(self.teacher_params, self.student_params, ema_w)
        # autocast's weight-cast cache must be off while a CUDA graph is captured (torch.cuda.graphs docs)
        with autocast_context(self.device, self.dtype, cache_enabled=self.graph is None):
            loss, logs = self.model(views, self.rng)
        if fault("nan", i + 1):  # SDMP_FAULT=nan@N (tests): a diverging step
            loss = loss * float("nan")
            logs = {**logs, "loss": logs["loss"] * float("nan")} if "loss" in logs else logs
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.optim.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            if self.cfg.optim.clip_mode == "per_param":
                clip_grad_per_param_(self.method.student_parameters(), self.cfg.optim.clip_grad)
            else:
                torch.nn.utils.clip_grad_norm_(self.method.student_parameters(), self.cfg.optim.clip_grad)
        self.method.after_backward(i)
        if self.device_schedules and self._wd_t is not None:
            self._decoupled_decay(lr, at(self._wd_t, st))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if not self.method.ema_before_forward:
            ema_lerp_(self.teacher_params, self.student_params, ema_w)
        st.add_(1)
        return logs

    @torch.no_grad()
    def _decoupled_decay(self, lr: torch.Tensor, wd: torch.Tensor) -> None:
        """AdamW's decay ``p *= 1 - lr * wd`` from device scalars, on the decayed groups' parameters that
        the optimizer will update (a parameter without a gradient, DINO's frozen last layer, is skipped
        by AdamW and so gets no decay either)."""
        params = [p for group in self.optimizer.param_groups if group.get("apply_wd", True)
                  for p in group["params"] if p.grad is not None]
        if params:
            torch._foreach_mul_(params, 1.0 - lr * wd)

    # ------------------------------------------------------------------ loop

    def fit(self, progress: bool = True) -> FitResult:
        cfg, res = self.cfg, self.res
        spe, total = res.steps_per_epoch, res.total_steps
        stop_at = min(total, self.step + cfg.run.stop_after) if cfg.run.stop_after else total
        main = dist.is_main()
        from tqdm import tqdm
        bar = tqdm(total=total, initial=self.step, desc=f"{cfg.method.name}{'+sdmp' if cfg.sdmp.enabled else ''}",
                   unit="step", disable=not (progress and main), dynamic_ncols=True, mininterval=1.0)
        t_start, start_step = time.time(), self.step
        self.method.train()
        self.stalls, self.board = meter_for(self.device), Board(self.rundir.path, cfg.run.tensorboard, self.step)
        self.preempt.install()
        try:
            self._loop(stop_at, spe, bar, t_start)
        finally:
            self.preempt.restore()
            self.preempt.drain()
            bar.close()
            self.board.close()
        secs = time.time() - t_start
        done = self.step - start_step
        return FitResult(steps_done=done, total_steps=total, seconds=secs,
                         images_per_s=done * cfg.data.batch_size / max(secs, 1e-9), last_logs=self.last_logs,
                         stopped_early=self.step < total, preempted=self.preempt_stop,
                         data_wait=self.stalls.run_figures())

    def _loop(self, stop_at: int, spe: int, bar, t_start: float) -> None:
        cfg = self.cfg
        t_log = t_ckpt = time.time()
        steps_at_log = self.step
        sums: dict[str, torch.Tensor] = {}
        n_sum = 0
        self.last_logs, self.preempt_stop = {}, None
        while self.step < stop_at:
            epoch, start_in_epoch = divmod(self.step, spe)
            self.loader.set_epoch(epoch, start_in_epoch)
            for batch in self.stalls.batches(self.loader):  # the wait for each batch is timed
                logs = self.stalls.step(self.train_step, batch.views)
                for k, v in logs.items():
                    sums[k] = sums[k] + v.float() if k in sums else v.float().clone()
                n_sum += 1
                bar.update(1)
                after_step(self.step)
                preempted = self.preempt.poll()  # the same answer on every rank at this step
                at_end = self.step >= stop_at
                epoch_end = self.step % spe == 0
                if self.step % cfg.run.log_every == 0 or at_end or epoch_end or preempted:
                    # the only host sync of the loop: one read of the summed device values (averaged over ranks)
                    keys = sorted(sums)
                    means = dist.all_reduce_mean(torch.stack([sums[k] for k in keys])) if keys else None
                    vals = {k: float(means[i]) / n_sum for i, k in enumerate(keys)}
                    now = time.time()
                    ips = (self.step - steps_at_log) * cfg.data.batch_size / max(now - t_log, 1e-9)
                    host = self._host
                    last = self.last_logs = {"step": self.step, "epoch": self.step / spe, **vals, "lr": host["lr"][self.step - 1],
                            "momentum": host["momentum"][self.step - 1], "images_per_s": ips,
                            "elapsed_s": now - t_start, "time": now, **self.stalls.interval(now - t_log)}
                    if self.wd is not None:
                        last["weight_decay"] = host["wd"][self.step - 1]
                    last.update(self.method.step_info())
                    if not all(math.isfinite(v) for v in vals.values()):
                        raise NonFiniteLoss(
                            f"non-finite loss at step {self.step} ({vals}); last good checkpoint: "
                            f"{self.last_checkpoint or 'none written in this run'}")
                    self.rundir.log(last)
                    self.board.write(last)
                    bar.set_postfix(loss=f"{vals.get('loss', float('nan')):.4f}", lr=f"{last['lr']:.2e}", ips=f"{ips:.0f}",
                                    **postfix(last))
                    sums, n_sum, t_log, steps_at_log = {}, 0, now, self.step
                    timed = cfg.run.checkpoint_minutes > 0 and now - t_ckpt >= 60 * cfg.run.checkpoint_minutes
                    timed = dist.broadcast_flag(timed)  # rank 0's clock decides for every rank
                    if epoch_end or at_end or timed or preempted:
                        self.save_checkpoint()
                        t_ckpt = time.time()
                if preempted and not at_end:
                    self.preempt_stop = self.preempt.signal_name or "a signal"
                    return
                if at_end:
                    return
