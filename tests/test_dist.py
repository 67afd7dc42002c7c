import torch

from distributed import launch
from sdmp_fast import dist
from sdmp_fast.data.folders import DataError
from sdmp_fast.engine import checkpoint as ckpt


def _worker(rank, world, out):
    from sdmp_fast.data.sharding import rank_batches
    from sdmp_fast.config import load_config, resolve
    assert dist.is_dist() and dist.get_rank() == rank and dist.get_world() == world
    res = resolve(load_config(overrides=["data.batch_size=8"]), num_samples=37, world=world, rank=rank)
    gathered = dist.all_gather_cat(torch.full((2, 3), float(rank)))
    token = dist.broadcast_object({"from": rank} if rank == 0 else None)
    # differentiable sum: forward sums, backward sums every rank's gradient
    x = torch.full((3,), float(rank + 1), requires_grad=True)
    y = dist.all_reduce_sum_autograd(x)
    (y * (rank + 1)).sum().backward()

    def rank0_fails():
        if dist.is_main():
            raise DataError("no images in /data/x")
        return "others ran"
    try:
        dist.main_first(rank0_fails)
        failure = None
    except DataError as e:
        failure = str(e)
    # a config error (6 / 2 ranks = 3 per rank: odd, SDMP cannot pair) stops both ranks, no hang
    bad = _pretrain_worker(rank, world, out, ["data.batch_size=6"])
    return {"bad_config": bad, "sum": y.tolist(), "sum_grad": x.grad.tolist(), "failure": failure,
            "first": dist.main_first(lambda: rank), "flag": dist.broadcast_flag(rank == 0),
            "local_batch": res.local_batch, "steps": res.steps_per_epoch, "gathered": gathered[:, 0].tolist(),
            "token": token, "ids": rank_batches(37, 8, rank, world, seed=0, epoch=0)}


def test_single_process_helpers_are_identity():
    assert not dist.is_dist() and dist.get_rank() == 0 and dist.get_world() == 1 and dist.is_main()
    x = torch.randn(3, 2)
    assert dist.all_gather_cat(x) is x and dist.broadcast_object(5) == 5
    dist.barrier()
    dist.shutdown()


def test_two_process_gloo_smoke(tmp_path):
    out = launch(_worker, world=2, args=(str(tmp_path / "run"),), timeout=90)
    assert [o["bad_config"] for o in out] == [2, 2] and not (tmp_path / "run").exists()
    assert [o["local_batch"] for o in out] == [4, 4] and [o["steps"] for o in out] == [4, 4]
    assert out[0]["gathered"] == out[1]["gathered"] == [0.0, 0.0, 1.0, 1.0]
    assert out[0]["token"] == out[1]["token"] == {"from": 0}
    assert out[0]["sum"] == out[1]["sum"] == [3.0] * 3 and out[0]["sum_grad"] == out[1]["sum_grad"] == [3.0] * 3
    assert out[0]["failure"] == out[1]["failure"] == "no images in /data/x"
    assert [o["first"] for o in out] == [0, 1] and [o["flag"] for o in out] == [True, True]
    ids0 = {i for b in out[0]["ids"] for i in b}
    ids1 = {i for b in out[1]["ids"] for i in b}
    assert not ids0 & ids1 and len(ids0 | ids1) == 32


def _pretrain_worker(rank, world, out, extra):
    from sdmp_fast.pretrain import main
    return main(["--loader", "synthetic", "--out", out, "run.knn=false", "run.log_every=1", "data.batch_size=8",
                 "method.hidden_dim=64", "method.out_dim=32"] + extra)


def test_two_rank_pretraining_cli_rank0_writes(tmp_path):
    """What torchrun runs, 2 gloo ranks in-process: both train; rank 0 alone writes logs, checkpoint, export."""
    out = tmp_path / "run"
    assert launch(_pretrain_worker, world=2, args=(str(out), ["run.max_steps=3", "run.stop_after=2"]), timeout=120) == [0, 0]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # one writer
    ckpts = ckpt.list_checkpoints(out)
    assert [c.name for c in ckpts] == [ckpt.checkpoint_path(out, 2).name]
    state = torch.load(ckpts[0], weights_only=False)
    assert state["world"] == 2 and len(state["rng_ranks"]) == 2
    a, b = state["rng_ranks"]
    assert a["shared"] == b["shared"] and not torch.equal(a["local"], b["local"])
    # both ranks continue from rank 0's checkpoint, each with its own stream
    assert launch(_pretrain_worker, world=2, args=(str(out), ["run.max_steps=3", "--resume", "auto"]),
                  timeout=120) == [0, 0]
    assert [c.name for c in ckpt.list_checkpoints(out)][-1] == ckpt.checkpoint_path(out, 3).name
    assert (out / "backbone.pt").is_file()
