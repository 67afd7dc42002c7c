"""Choosing the implementation once (sdmp.impl, data.augment_impl) and the errors when Triton cannot run."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from sdmp_fast import augment, mixing
from sdmp_fast.config import ConfigError, load_config
from sdmp_fast.kernels import check_launchable, select_apply_views, select_mix, select_mixer

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")


def test_torch_selects_the_references():
    assert select_mix("torch") is mixing.mix
    assert select_apply_views("torch") is augment.apply_views
    with pytest.raises(ConfigError, match="choose torch or triton"):
        select_mix("cuda")


@no_cuda
def test_triton_without_a_gpu_names_the_torch_fallback(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ConfigError, match=r"no CUDA GPU.*set sdmp\.impl=torch"):
        select_mix("triton")
    with pytest.raises(ConfigError, match=r"set data\.augment_impl=torch"):
        select_apply_views("triton")
    with pytest.raises(RuntimeError, match=r"set sdmp\.impl=torch"):
        check_launchable(torch.zeros(1), "sdmp.impl")


def test_a_broken_triton_import_names_the_fallback(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # past the GPU check, to the import
    monkeypatch.setitem(sys.modules, "triton", None)  # import triton raises ImportError
    with pytest.raises(ConfigError, match=r"triton cannot be imported.*set sdmp\.impl=torch"):
        select_mix("triton")


@no_cuda
@pytest.mark.parametrize("method", ["mocov3", "dino"])
def test_methods_resolve_sdmp_impl_when_built(monkeypatch, method):
    from sdmp_fast.methods import build_method
    from sdmp_fast.models import build_backbone
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    extra = {"model.backbone": "vit_tiny_p4_dino", "data.local_crops": 2} if method == "dino" else {}
    cfg = load_config(overrides={"method.name": method, "sdmp.impl": "triton", **extra})
    with pytest.raises(ConfigError, match=r"set sdmp\.impl=torch"):
        build_method(cfg, build_backbone(cfg))
    off = load_config(overrides={"method.name": method, "sdmp.impl": "triton", "sdmp.enabled": False, **extra})
    assert build_method(off, build_backbone(off)).mixer is None  # no mixing: nothing to select


def test_select_mixer_follows_the_config():
    assert select_mixer(load_config(overrides=["sdmp.enabled=false"])) is None
    host = select_mixer(load_config(overrides=["sdmp.enabled=true", "sdmp.ops=mixup,cutmix", "sdmp.alpha=0.5"]))
    assert type(host) is mixing.HostMixer and host.ops == ("mixup", "cutmix") and host.alpha == 0.5
    assert host.mix_fn is mixing.mix
    graph = select_mixer(load_config(overrides=["sdmp.enabled=true", "run.cuda_graph=true"]))
    assert type(graph) is mixing.DeviceMixer  # a captured step replays no host draw


def test_config_accepts_the_impls():
    """(data.augment_impl=triton with a loader that does not use it: tests/loaders/test_check_config.py.)"""
    assert load_config(overrides={"sdmp.impl": "triton"}).sdmp.impl == "triton"
    cfg = load_config(overrides={"data.augment_impl": "triton", "data.loader": "nvjpeg"})
    assert cfg.data.augment_impl == "triton"
    with pytest.raises(ConfigError, match="one of torch, triton"):
        load_config(overrides={"sdmp.impl": "cuda"})


def test_importing_the_kernels_package_imports_no_triton():
    code = "import sys, sdmp_fast.kernels; sys.exit(1 if 'triton' in sys.modules else 0)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


@no_cuda
def test_nvjpeg_loader_resolves_augment_impl_when_built(monkeypatch, image_folder):
    from loaders.nvjpeg import build
    from sdmp_fast.augment.recipes import mocov3_recipe
    from sdmp_fast.data.folders import scan_folder
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cfg = load_config(overrides={"data.loader": "nvjpeg", "data.augment_impl": "triton", "data.batch_size": 4})
    split, _ = scan_folder(image_folder / "train")
    with pytest.raises(ConfigError, match=r"set data\.augment_impl=torch"):
        build(cfg, mocov3_recipe(32, 0.2, cfg.data.mean, cfg.data.std), split=split)
