import torch

from distributed import launch
from sdmp_fast import dist


def _worker(rank, world):
    from loaders.sharding import rank_batches
    from sdmp_fast.config import load_config, resolve
    assert dist.is_dist() and dist.get_rank() == rank and dist.get_world() == world
    res = resolve(load_config(overrides=["data.batch_size=8"]), num_samples=37, world=world, rank=rank)
    gathered = dist.all_gather_cat(torch.full((2, 3), float(rank)))
    token = dist.broadcast_object({"from": rank} if rank == 0 else None)
    return {"local_batch": res.local_batch, "steps": res.steps_per_epoch, "gathered": gathered[:, 0].tolist(),
            "token": token, "ids": rank_batches(37, 8, rank, world, seed=0, epoch=0),
            "max_flag": dist.all_reduce_max_int(rank * 5)}


def test_single_process_helpers_are_identity():
    assert not dist.is_dist() and dist.get_rank() == 0 and dist.get_world() == 1 and dist.is_main()
    x = torch.randn(3, 2)
    assert dist.all_gather_cat(x) is x and dist.broadcast_object(5) == 5
    dist.barrier()
    dist.shutdown()


def test_two_process_gloo_smoke():
    out = launch(_worker, world=2, timeout=90)
    assert [o["local_batch"] for o in out] == [4, 4] and [o["steps"] for o in out] == [4, 4]
    assert out[0]["gathered"] == out[1]["gathered"] == [0.0, 0.0, 1.0, 1.0]
    assert out[0]["token"] == out[1]["token"] == {"from": 0}
    assert out[0]["max_flag"] == out[1]["max_flag"] == 5
    ids0 = {i for b in out[0]["ids"] for i in b}
    ids1 = {i for b in out[1]["ids"] for i in b}
    assert not ids0 & ids1 and len(ids0 | ids1) == 32


def _pretrain_worker(rank, world, out):
    from sdmp_fast.pretrain import main
    return main(["--loader", "synthetic", "--out", f"{out}/r{rank}", "run.max_steps=1", "run.knn=false"])


def test_multi_process_pretraining_is_refused_until_ddp_exists(tmp_path, capfd):
    assert launch(_pretrain_worker, world=2, args=(str(tmp_path),), timeout=90) == [2, 2]
    assert not any(tmp_path.iterdir())  # nothing written
