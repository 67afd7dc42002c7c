"""Linear probes: the protocols' features, top-k counts, and a head trained on separable features (a reference loop)."""
import torch

import sdmp_fast.models  # noqa: F401  (registers the backbones)
from sdmp_fast.eval.probe import (LinearHeads, build_probe_optimizer, cosine_lr, feature_dim, percent_correct,
                                  probe_features, probe_step, set_lr, topk_correct)
from sdmp_fast.registry import BACKBONES


def fit_linear_probe(feats, labels, num_classes, *, epochs, batch_size, lr, seed=0):
    """The protocol's optimisation on cached features ``[N, D]`` with shuffled full batches: one head."""
    torch.manual_seed(seed)
    heads = LinearHeads({"probe": feats.shape[1]}, num_classes)
    opt = build_probe_optimizer(heads, lr, 0.9, 0.0)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        set_lr(opt, cosine_lr(lr, epoch, epochs))
        perm = torch.randperm(feats.shape[0], generator=g)
        for i in range(0, feats.shape[0] - batch_size + 1, batch_size):
            idx = perm[i:i + batch_size]
            probe_step(heads, opt, {"probe": feats[idx]}, labels[idx])
    return heads.heads["probe"]


def top1(head, feats, labels) -> float:
    with torch.no_grad():
        return percent_correct(topk_correct(head(feats), labels), len(labels), head.out_features)["top1"]


def _clusters(n: int, g: torch.Generator, centers: torch.Tensor):
    y = torch.arange(n) % centers.shape[0]
    return centers[y] + 0.5 * torch.randn(n, centers.shape[1], generator=g), y


def test_probe_learns_separable_features_and_not_shuffled_labels():
    g = torch.Generator().manual_seed(0)
    centers = 3 * torch.randn(4, 32, generator=g)
    x, y = _clusters(800, g, centers)
    xv, yv = _clusters(400, g, centers)
    assert top1(fit_linear_probe(x, y, 4, epochs=10, batch_size=64, lr=0.5), xv, yv) > 98
    shuffled = y[torch.randperm(len(y), generator=g)]
    assert top1(fit_linear_probe(x, shuffled, 4, epochs=10, batch_size=64, lr=0.5), xv, yv) < 40  # chance is 25


def test_topk_counts_and_percentages():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1], [0.0, 0.3, 0.2]])
    labels = torch.tensor([0, 1, 1, 0])
    counts = topk_correct(scores, labels)  # top-5 of 3 classes: every label
    assert counts.tolist() == [1, 4]
    assert percent_correct(counts, 4, num_classes=3) == {"top1": 25.0}  # top-5 of 3 classes is left out
    assert percent_correct(topk_correct(scores, labels, ks=(1, 2)), 4, 3, ks=(1, 2)) == {"top1": 25.0, "top2": 75.0}
    wide = torch.zeros(2, 6)
    wide[0, 5], wide[1, 0] = 1.0, 1.0
    assert percent_correct(topk_correct(wide, torch.tensor([5, 3])), 2, 6) == {"top1": 50.0, "top5": 100.0}


def test_protocol_features_of_a_tiny_vit():
    torch.manual_seed(0)
    vit = BACKBONES.build("vit_tiny_p4", img_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        last = probe_features(vit, x, "mocov3")
        four = probe_features(vit, x, "dino")
        assert last.shape == (2, 128) and torch.allclose(last, vit(x))  # the last block's class token, normed
        assert four.shape == (2, 4 * 128) == (2, feature_dim(vit, "dino"))
        assert torch.allclose(four[:, -128:], last, atol=1e-5)  # the 4th of the last 4 blocks is the last one
        assert not torch.allclose(four[:, :128], last, atol=1e-3)
