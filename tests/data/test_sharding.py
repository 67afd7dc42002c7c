"""The sharding rule: per-rank slices of each global batch, disjoint, equal steps on every rank."""
from sdmp_fast.data.sharding import rank_batches


def test_sharding_disjoint_cover_equal_steps():
    n, gb, world = 103, 12, 3
    per_rank = [rank_batches(n, gb, r, world, seed=1, epoch=0) for r in range(world)]
    assert {len(p) for p in per_rank} == {n // gb}
    flat = [i for p in per_rank for b in p for i in b]
    assert len(flat) == len(set(flat)) == (n // gb) * gb
    assert all(len(b) == gb // world for p in per_rank for b in p)
