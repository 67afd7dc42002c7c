import pytest
import timm
import torch

from sdmp_fast.export import export_backbone, load_backbone
from sdmp_fast.models.heads import build_mlp
from sdmp_fast.models.vit import sincos_pos_embed
from sdmp_fast.registry import BACKBONES


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_builds_and_runs(name):
    small = name == "vit_tiny_p4"
    model = BACKBONES.build(name, img_size=32 if small else 64)
    x = torch.randn(2, 3, 32 if small else 64, 32 if small else 64).contiguous(memory_format=torch.channels_last)
    y = model(x)
    assert y.shape == (2, model.num_features)
    y.sum().backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(model.get_parameter(n).grad is not None for n in trainable)


def test_mocov3_form_vit_small():
    m = BACKBONES.build("vit_small", img_size=224)
    assert m.blocks[0].attn.num_heads == 12 and m.embed_dim == 384
    assert not m.pos_embed.requires_grad and not m.patch_embed.proj.weight.requires_grad
    assert torch.allclose(m.pos_embed[0, 1:], sincos_pos_embed(14, 14, 384))
    assert torch.equal(m.pos_embed[0, 0], torch.zeros(384))


def test_export_round_trip_rebuilds_the_exact_architecture(tmp_path):
    torch.manual_seed(0)
    m = BACKBONES.build("vit_small", img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    path = export_backbone(m, tmp_path / "b.pt")
    loaded = load_backbone(path).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(x), m(x), atol=1e-6)
    d = torch.load(path, weights_only=False)
    again = timm.create_model(d["model_name"], **d["model_kwargs"]).eval()
    again.load_state_dict(d["state_dict"])
    with torch.no_grad():
        assert torch.allclose(again(x), m(x), atol=1e-6)
        # the trap the recorded kwargs avoid: the 6-head default ViT-S loads the same tensors silently ...
        six = timm.create_model("vit_small_patch16_224", img_size=64, num_classes=0).eval()
        six.load_state_dict(d["state_dict"])
        # ... and computes different features
        assert not torch.allclose(six(x), m(x), atol=1e-3)


def test_load_backbone_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no exported backbone"):
        load_backbone(tmp_path / "x.pt")
    torch.save({"a": 1}, tmp_path / "y.pt")
    with pytest.raises(ValueError, match="not an sdmp_fast backbone export"):
        load_backbone(tmp_path / "y.pt")


def test_mlp_heads_follow_mocov3():
    proj = build_mlp(3, 16, 32, 8, last_bn=True)
    kinds = [type(m).__name__ for m in proj]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert not proj[-1].affine and all(not m.bias is not None for m in proj if isinstance(m, torch.nn.Linear))
    pred = build_mlp(2, 8, 32, 8, last_bn=False)
    assert type(pred[-1]).__name__ == "Linear"
