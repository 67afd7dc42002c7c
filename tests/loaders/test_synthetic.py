"""The synthetic loader: the Batch contract, sharded steps and resuming at a step."""
import torch

from loaders.synthetic import SyntheticLoader
from sdmp_fast.augment.recipes import mocov3_recipe

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_synthetic_loader_contract():
    recipe = mocov3_recipe(32, 0.2, MEAN, STD, num_views=4)
    ld = SyntheticLoader(recipe, global_batch=8, rank=1, world=2, device=torch.device("cpu"), seed=0, num_samples=40)
    assert len(ld) == 5 and ld.batch_size == 4
    ld.set_epoch(0, 3)
    bs = list(ld)
    assert len(bs) == 2
    for b in bs:
        b.check()
        assert len(b.views) == 4 and b.views[0].shape == (4, 3, 32, 32)
    ld.set_epoch(0, 3)
    assert torch.equal(next(iter(ld)).views[0], bs[0].views[0])
