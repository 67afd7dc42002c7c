import pytest
import timm
import torch

from sdmp_fast.export import export_backbone, load_backbone
from sdmp_fast.models.heads import DINOHead, build_mlp
from sdmp_fast.models.vit import sincos_pos_embed
from sdmp_fast.registry import BACKBONES


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_builds_and_runs(name):
    small = name.startswith("vit_tiny_p4") or name.endswith("_cifar")  # CIFAR ResNets: 32 px, as they are used
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
    bn = "ChunkedSyncBatchNorm"
    assert kinds == ["Linear", bn, "ReLU", "Linear", bn, "ReLU", "Linear", bn]
    assert not proj[-1].affine and all(not m.bias is not None for m in proj if isinstance(m, torch.nn.Linear))
    pred = build_mlp(2, 8, 32, 8, last_bn=False)
    assert type(pred[-1]).__name__ == "Linear"


def test_dino_form_vits_interpolate_the_learned_position_embedding(tmp_path):
    s = BACKBONES.build("vit_small_dino", img_size=224, drop_path=0.1)
    assert s.blocks[0].attn.num_heads == 6 and s.embed_dim == 384
    assert s.pos_embed.requires_grad and s.patch_embed.proj.weight.requires_grad
    assert s.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)  # timm's linear drop-path ramp
    torch.manual_seed(0)
    m = BACKBONES.build("vit_tiny_p4_dino", img_size=32).eval()
    local = torch.randn(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert m(local).shape == (2, 128) and m(torch.randn(2, 3, 32, 32)).shape == (2, 128)
    loaded = load_backbone(export_backbone(m, tmp_path / "d.pt")).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(local), m(local), atol=1e-6)  # dynamic_img_size is recorded


def test_dino_head_weight_norm_round_trips():
    torch.manual_seed(0)
    head = DINOHead(16, 40, hidden_dim=32, bottleneck_dim=8, norm_last_layer=True)
    kinds = [type(m).__name__ for m in head.mlp]
    assert kinds == ["Linear", "GELU", "Linear", "GELU", "Linear"]
    gain = head.last_layer.parametrizations.weight.original0
    assert gain.shape == (40, 1) and not gain.requires_grad
    w = head.last_layer.weight
    assert torch.allclose(w.norm(dim=1), torch.ones(40), atol=1e-5)  # unit prototypes
    x = torch.randn(5, 16)
    out = head(x)
    assert out.shape == (5, 40) and out.abs().max() <= 1 + 1e-5  # cosine similarities
    import copy
    twin = copy.deepcopy(head)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.1)
    twin.load_state_dict(head.state_dict())
    assert torch.equal(twin(x), head(x))
    free = DINOHead(16, 40, hidden_dim=32, bottleneck_dim=8, norm_last_layer=False)
    assert free.last_layer.parametrizations.weight.original0.requires_grad


@pytest.mark.parametrize("name, blocks", [("resnet50_cifar", [3, 4, 6, 3]), ("resnet101_cifar", [3, 4, 23, 3])])
def test_cifar_resnets_have_the_cifar_stem(name, blocks, tmp_path):
    torch.manual_seed(0)
    m = BACKBONES.build(name, img_size=32).eval()
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1) and m.conv1.padding == (1, 1)
    assert isinstance(m.maxpool, torch.nn.Identity)
    assert [len(getattr(m, f"layer{i}")) for i in range(1, 5)] == blocks and m.num_features == 2048
    if name != "resnet50_cifar":
        return
    # otherwise the ImageNet ResNet-50: the same parameters apart from the 3x3 stem kernel
    ref = BACKBONES.build("resnet50").state_dict()
    assert {k: v.shape for k, v in m.state_dict().items() if k != "conv1.weight"} == \
        {k: v.shape for k, v in ref.items() if k != "conv1.weight"}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert m.forward_features(x).shape == (2, 2048, 4, 4)  # stride 8 in all: 32 px -> 4 x 4 maps
        y = m(x)
    assert y.shape == (2, 2048)
    # the export rebuilds with timm alone (sdmp_fast.models registers the name with timm)
    d = torch.load(export_backbone(m, tmp_path / "r.pt"), weights_only=False)
    again = timm.create_model(d["model_name"], **d["model_kwargs"]).eval()
    again.load_state_dict(d["state_dict"])
    with torch.no_grad():
        assert d["model_name"] == "resnet50_cifar" and torch.allclose(again(x), y, atol=1e-5)


def test_each_backbone_declares_the_patch_size_it_builds():
    """The registry's ``meta={"patch": P}`` (the config-load check of the view sizes) is the built model's patch size,
    and every backbone with a patch embedding declares it (built on the meta device: shapes only, no memory)."""
    for name in BACKBONES.names():
        with torch.device("meta"):
            model = BACKBONES.build(name, img_size=32 if "tiny" in name or "cifar" in name else 224)
        embed = getattr(model, "patch_embed", None)
        declared = (BACKBONES.meta(name) or {}).get("patch")
        assert declared == (embed.patch_size[0] if embed is not None else None), name
