"""Weighted k-NN evaluation of frozen features (DINO's monitor: k = 20, cosine, weights exp(sim / 0.07)).

Features are L2-normalised; each query's k most similar bank entries vote for their class with weight
``exp(sim / T)``; top-1 and top-5 follow from the summed votes. The trained backbone is always
reported beside the same architecture at random initialisation, so learning is visible.
"""
from __future__ import annotations

import contextlib
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def extract_features(backbone: nn.Module, batches: Iterable, device: torch.device,
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``backbone`` in eval mode over (images, labels) batches; returns (features [N, D] normalised, labels [N])."""
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    ctx = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    for x, y in batches:
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with ctx:
            f = backbone(x)
        feats.append(F.normalize(f.float(), dim=1))
        labels.append(torch.as_tensor(y).to(device))
    backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def knn_classify(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, num_classes: int,
                 k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Class scores ``[Q, num_classes]`` of the weighted k-NN vote (features already normalised)."""
    k = min(k, bank.shape[0])
    out = []
    for q in queries.split(chunk):
        sim = q @ bank.T  # [q, N]
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        out.append(votes)
    return torch.cat(out)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    ks = tuple(k for k in ks if k <= scores.shape[1])
    pred = scores.topk(max(ks), dim=1).indices
    hit = pred == labels[:, None]
    return {f"top{k}": 100.0 * float(hit[:, :k].any(1).float().mean()) for k in ks}


def knn_accuracy(backbone: nn.Module, bank_batches: Iterable, query_batches: Iterable, num_classes: int,
                 device: torch.device, k: int = 20, temperature: float = 0.07) -> dict[str, float]:
    bank, bank_labels = extract_features(backbone, bank_batches, device)
    queries, query_labels = extract_features(backbone, query_batches, device)
    scores = knn_classify(bank, bank_labels, queries, num_classes, k=k, temperature=temperature)
    return topk_accuracy(scores, query_labels)
