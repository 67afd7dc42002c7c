"""Every DALI training graph the loader can build for a GPU, defined on any machine (no GPU needed).

Defining a pipeline runs DALI's graph checks (devices of inputs and arguments, operator schemas) without
building it; building needs the GPU. The graphs are those of ``loaders.dali.DaliLoader`` on ``cuda:0`` for each
method's recipe, read from image files and from WebDataset shards, and with float16 output.
"""
from __future__ import annotations

from pathlib import Path

import torch

from sdmp_fast.config import load_config
from sdmp_fast.health import Skipped
from sdmp_fast.methods.base import method_recipe

DINO = ["method.name=dino", "data.local_crops=6"]
# name -> (config overrides, read from shards, float16 output)
GRAPHS: dict[str, tuple[list[str], bool, bool]] = {
    "mocov3": ([], False, False),
    "mocov3+sdmp": (["sdmp.enabled=true"], False, False),
    "mocov3+sdmp-extra": (["sdmp.enabled=true", "sdmp.variant=extra"], False, False),
    "dino": (DINO, False, False),
    "dino+sdmp": (DINO + ["sdmp.enabled=true", "sdmp.mix_global_student=true"], False, False),
    "mocov3+sdmp-shards": (["sdmp.enabled=true"], True, False),
    "dino-fp16": (DINO, False, True),
}


def define_gpu_graph(name: str, batch: int = 8):
    """The pipeline of GRAPHS[name] as ``--loader dali`` defines it on a GPU (device ``cuda:0``), not built."""
    try:
        from loaders.dali import DaliLoader
    except ImportError as e:
        raise Skipped(f"DALI is not installed ({e})") from e
    from sdmp_fast.data.folders import Split
    overrides, shards, fp16 = GRAPHS[name]
    cfg = load_config(None, ["data.image_size=224", *overrides])
    recipe = method_recipe(cfg)
    files = tuple((f"/nonexistent/c0/{i}.jpg", 0) for i in range(2 * batch))  # a definition opens no file
    common = dict(recipe=recipe, global_batch=batch, rank=0, world=1, device=torch.device("cuda", 0), threads=1,
                  fp16=fp16)
    if shards:
        manifest = {"num_samples": 2 * batch, "classes": ["c0"], "tars": ["/nonexistent/shard-0.tar"],
                    "indices": ["/nonexistent/shard-0.idx"]}
        return DaliLoader(None, manifest=manifest, **common).pipeline(None), recipe
    split = Split(root=Path("/nonexistent"), classes=("c0",), samples=files)
    return DaliLoader(split, **common).pipeline(list(range(batch))), recipe


def check_gpu_graph(name: str) -> int:
    """Define GRAPHS[name] for the GPU; raise unless the decoder is ``mixed`` and every operator after it runs on
    the GPU; returns the operators after the decoder."""
    from loaders.dali import graph_ops
    pipe, _ = define_gpu_graph(name)
    ops = graph_ops(pipe)
    decoders = [(op, dev) for op, dev, _ in ops if op.startswith("decoders__")]
    if decoders != [("decoders__Image", "mixed")]:
        raise AssertionError(f"{name}: decoders {decoders}, expected one decoders__Image on 'mixed'")
    after = [(op, dev) for op, dev, downstream in ops if downstream and not op.startswith("decoders__")]
    off = sorted({f"{op} on {dev}" for op, dev in after if dev != "gpu"})
    if off:
        raise AssertionError(f"{name}: after the decoder, not on the GPU: {', '.join(off)}")
    return len(after)


def dali_gpu_graphs() -> str:
    ops = [check_gpu_graph(name) for name in GRAPHS]
    return (f"{len(GRAPHS)} graphs defined for the GPU (MoCo v3 2 and 4 views, DINO multi-crop, with and without "
            f"SDMP, shards, fp16): the decoder mixed, all {sum(ops)} ops after it on the GPU")
