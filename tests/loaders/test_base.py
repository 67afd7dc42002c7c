"""The shared loader part: the sharded state of the Loader contract, its refusal of too little data, canvas views."""
import importlib

import pytest
import torch
from conftest import require
from images import canvas_of, texture

from loaders.base import CanvasLoader, ShardedLoader
from sdmp_fast.augment import apply_views, sample_view_params
from sdmp_fast.augment.recipes import mocov3_recipe
from sdmp_fast.batch import Batch, Loader
from sdmp_fast.data.folders import DataError
from sdmp_fast.data.sharding import rank_batches
from sdmp_fast.streams import step_generator

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Ids(ShardedLoader):
    def __iter__(self):
        yield from self.step_ids()


def test_steps_batch_and_ids_follow_the_sharding_rule():
    ld = Ids(num_samples=103, global_batch=12, rank=2, world=3, seed=5, source="x")
    assert isinstance(ld, Loader) and len(ld) == 103 // 12 and ld.batch_size == 4 and ld.num_samples == 103
    assert list(ld) == rank_batches(103, 12, 2, 3, seed=5, epoch=0)
    ld.set_epoch(3, start_step=5)
    assert list(ld) == rank_batches(103, 12, 2, 3, seed=5, epoch=3, start_step=5) and len(list(ld)) == len(ld) - 5
    assert ld.step_ids(epoch=1, start_step=0) == rank_batches(103, 12, 2, 3, seed=5, epoch=1)


def test_fewer_samples_than_one_global_batch_is_refused_naming_the_data():
    with pytest.raises(DataError, match=r"^/data/x: 7 images are fewer than one global batch \(8\); lower "
                                        r"data\.batch_size$"):
        Ids(num_samples=7, global_batch=8, rank=0, world=1, seed=0, source="/data/x")


@pytest.mark.parametrize("module, cls, backend", [
    ("loaders.torch_folder", "FolderLoader", None), ("loaders.synthetic", "SyntheticLoader", None),
    ("loaders.nvjpeg", "NvjpegLoader", None), ("loaders.dali", "DaliLoader", "dali"),
    ("loaders.ffcv_loader", "FfcvLoader", "ffcv")])
def test_every_loader_uses_the_shared_part(module, cls, backend):
    mod = require(module, backend) if backend else importlib.import_module(module)
    assert issubclass(getattr(mod, cls), CanvasLoader if module in ("loaders.nvjpeg", "loaders.ffcv_loader")
                      else ShardedLoader)


def test_canvas_batch_draws_from_the_step_stream_and_applies_the_batched_views():
    recipe = mocov3_recipe(16, 0.2, MEAN, STD)
    canvas, sizes = canvas_of([texture(30, 40, 0), texture(44, 20, 1), texture(25, 25, 2), texture(40, 36, 3)])
    ld = CanvasLoader(recipe, torch.device("cpu"), "torch", num_samples=40, global_batch=8, rank=1, world=2, seed=3,
                     source="x")
    ld.set_epoch(2)
    index, label = torch.arange(4), torch.tensor([0, 1, 0, 1])
    got = ld.canvas_batch(5, canvas, sizes, index, label)
    got.check()
    params = sample_view_params(recipe, sizes, step_generator(3, 1, 2, 5, torch.device("cpu")))
    for a, b in zip(got.views, apply_views(canvas, sizes, params, recipe)):
        assert torch.equal(a, b)
    assert got.index is index and got.label is label


def test_the_device_prefetcher_copies_every_batch_in_order():
    from loaders.base import DevicePrefetcher
    batches = [Batch(views=[torch.full((2, 3, 4, 4), float(i))], index=torch.tensor([i, i]), label=torch.zeros(2))
               for i in range(3)]
    out = list(DevicePrefetcher(batches, torch.device("cpu")))
    assert [int(b.index[0]) for b in out] == [0, 1, 2]
    assert all(b.views[0].is_contiguous(memory_format=torch.channels_last) for b in out)


@pytest.mark.gpu
def test_gpu_prefetch_overlaps_the_copy_of_the_next_batch_with_the_step():
    """Batch 1's copy (200 MB, pinned) runs on the side stream while step 0 (a ~30 ms kernel) runs: step 0 starts
    before that copy has finished. Copied on the training stream, step 0 would start after it."""
    from loaders.base import DevicePrefetcher
    views = [torch.ones(16, 3, 1024, 1024).contiguous(memory_format=torch.channels_last)]
    host = [Batch(views=views, index=torch.arange(16), label=torch.arange(16)).pin_memory() for _ in range(2)]
    pre = DevicePrefetcher(host, torch.device("cuda"), timing=True)
    start = torch.cuda.Event(enable_timing=True)
    start.record()
    step_starts = []
    for b in pre:
        step_starts.append(torch.cuda.Event(enable_timing=True))
        step_starts[-1].record()
        torch.cuda._sleep(50_000_000)  # the step
        b.views[0].add_(1)
    torch.cuda.synchronize()
    assert start.elapsed_time(step_starts[0]) < start.elapsed_time(pre.events[1])
