"""Two gloo processes vs one process: a DDP training step equals the single-process step on the
concatenated batch (losses, gradients, DINO's centre), for MoCo v3 + SDMP and DINO + SDMP.

Each rank runs ``Trainer.train_step`` (DDP, synchronised BatchNorm, gathered keys, all-reduced centre)
on its B samples. The single-process reference is written out here from the pure loss functions: one
forward over the concatenated 2B samples (BatchNorm statistics over 2B), the SDMP pairing inside each
B-sized chunk (chunk c is rank c: its own key columns c*B..., its partner B-1-i inside the chunk), the
mixed views and lambdas each rank drew (recomputed from its saved random streams), and the mean of
the chunks' losses (DDP averages the ranks' gradients).
"""
import copy
from pathlib import Path

import torch
from distributed import launch

from sdmp_fast.config import load_config, resolve
from sdmp_fast.engine.trainer import Trainer
from sdmp_fast.losses import moco_sdmp_loss
from sdmp_fast.losses.dino import dino_loss, dino_sdmp_terms, student_log_probs, teacher_probs, update_center
from sdmp_fast.methods import build_method
from sdmp_fast.models import build_backbone
from sdmp_fast.streams import StepRandom

WORLD, B = 2, 4
CPU = torch.device("cpu")
COMMON = [f"data.batch_size={WORLD * B}", "data.image_size=16", "sdmp.enabled=true", "optim.clip_grad=0",
          "optim.warmup_epochs=0", "run.max_steps=10"]
MOCO = COMMON + ["model.backbone=vit_tiny_p4", "method.hidden_dim=64", "method.out_dim=32"]
DINO = COMMON + ["method.name=dino", "model.backbone=vit_tiny_p4_dino", "data.local_size=8", "data.local_crops=4",
                 "method.dino_out_dim=64", "method.dino_hidden_dim=64", "method.dino_bottleneck_dim=32",
                 "method.freeze_last_layer=0", "method.warmup_teacher_temp_epochs=0"]


def _build(overrides, world=1, rank=0):
    cfg = load_config(None, overrides)
    torch.manual_seed(0)
    method = build_method(cfg, build_backbone(cfg))
    return cfg, method, resolve(cfg, 10_000, world, rank)


def _views(overrides):
    cfg = load_config(None, overrides)
    from sdmp_fast.methods.base import method_recipe
    g = torch.Generator().manual_seed(1)
    return [torch.randn(WORLD * B, 3, s, s, generator=g) for s in method_recipe(cfg).sizes]


def _rank_step(rank, world, overrides, views, out):
    cfg, method, res = _build(overrides, world, rank)
    trainer = Trainer(cfg, res, method, None, CPU, Path(out))
    before = copy.deepcopy(trainer.rng.state_dict())
    logs = trainer.train_step([v[rank * B:(rank + 1) * B] for v in views])
    after = trainer.rng.state_dict()
    return {"loss": float(logs["loss"]), "rng": before, "shared_after": after["shared"], "local_after": after["local"],
            "grads": {n: p.grad.clone() for n, p in method.student.named_parameters() if p.grad is not None},
            "center": method.center.clone() if hasattr(method, "center") else None}


def _rank_views(method, overrides, views, outs):
    """Each rank's SDMP views, recomputed from the random streams it started the step with."""
    cfg = load_config(None, overrides)
    per_rank = []
    for r, o in enumerate(outs):
        rng = StepRandom.create(cfg.run.seed, r, CPU)
        rng.load_state_dict(o["rng"])
        per_rank.append(method.sdmp_views([v[r * B:(r + 1) * B] for v in views], rng))
    return per_rank


def _check(outs, method, ref_loss):
    ref_loss.backward()
    assert abs(sum(o["loss"] for o in outs) / WORLD - float(ref_loss.detach())) < 1e-5
    grads = {n: p.grad for n, p in method.student.named_parameters() if p.grad is not None}
    assert set(grads) == set(outs[0]["grads"]) == set(outs[1]["grads"]) and grads
    # float32 summed in other orders: entries may differ by a small fraction of the tensor's largest
    # entry; gradients that are zero in exact arithmetic (biases in front of a BatchNorm) are noise
    scale = max(float(g.abs().max()) for g in grads.values())
    for n, g in grads.items():
        for o in outs:
            err = float((o["grads"][n] - g).abs().max())
            assert err <= 2e-5 * float(g.abs().max()) + 1e-6 * scale, (n, err, float(g.abs().max()))
    # the two streams: shared identical on both ranks, per-rank different
    assert outs[0]["shared_after"] == outs[1]["shared_after"]
    assert not torch.equal(outs[0]["local_after"], outs[1]["local_after"])


def test_mocov3_sdmp_two_ranks_equal_one_process_on_the_concatenated_batch(tmp_path):
    views = _views(MOCO)
    outs = launch(_rank_step, WORLD, (MOCO, views, str(tmp_path)), timeout=120)
    cfg, method, _ = _build(MOCO)
    mv = _rank_views(method, MOCO, views, outs)
    assert mv[0].op == mv[1].op                                        # shared stream: the same op
    assert not torch.allclose(mv[0].lam_q, mv[1].lam_q)                # per-rank stream: different lambdas
    cat = {k: torch.cat([getattr(m, k) for m in mv]) for k in ("a", "b", "b_mix", "a_mix")}
    q_a, q_bm = method.student(cat["a"]), method.student(cat["b_mix"])  # BatchNorm over all 2B samples
    with torch.no_grad():
        k_a, k_am, k_b = (method.teacher(cat[k]) for k in ("a", "a_mix", "b"))
    T, sl = cfg.method.temperature, [slice(r * B, (r + 1) * B) for r in range(WORLD)]
    loss = sum(moco_sdmp_loss(q_a[s], q_bm[s], k_a, k_am, k_b, m.lam_q, m.lam_k, T, rank=r,
                              weights=cfg.sdmp.weights)["loss"] for r, (s, m) in enumerate(zip(sl, mv))) / WORLD
    _check(outs, method, loss)


def test_dino_sdmp_two_ranks_equal_one_process_on_the_concatenated_batch(tmp_path):
    views = _views(DINO)
    outs = launch(_rank_step, WORLD, (DINO, views, str(tmp_path)), timeout=120)
    cfg, method, _ = _build(DINO)
    mv = _rank_views(method, DINO, views, outs)
    assert mv[0].op == mv[1].op and not torch.allclose(mv[0].lam_global, mv[1].lam_global)

    def cat(key):
        return [torch.cat([getattr(m, key)[i] for m in mv]) for i in range(len(getattr(mv[0], key)))]
    with torch.no_grad():
        t_out = method.teacher(torch.cat(cat("globals") + [torch.cat([m.global_mix for m in mv])]))
    locals_ = cat("clean_locals") + cat("mixed_locals")
    s_out = torch.cat([method.student(torch.cat(cat("student_globals"))), method.student(torch.cat(locals_))])
    K, center0 = t_out.shape[-1], method.center.clone()
    probs = teacher_probs(t_out, center0, method.teacher_temp).view(3, WORLD * B, K)
    logp = student_log_probs(s_out, method.student_temp).view(-1, WORLD * B, K)
    n_clean = 2 + len(mv[0].clean_locals)
    loss = 0
    for r, m in enumerate(mv):
        s = slice(r * B, (r + 1) * B)
        terms = dino_sdmp_terms(probs[:2, s], probs[2, s], logp[n_clean:, s], m.lam_locals, m.lam_global)
        loss = loss + (dino_loss(logp[:n_clean, s], probs[:2, s]) + terms["source"] + terms["mix"]) / WORLD
    _check(outs, method, loss)
    center = update_center(center0, t_out[:2 * WORLD * B], method.center_momentum)
    for o in outs:
        assert torch.allclose(o["center"], center, atol=1e-6)
