"""Weighted k-NN evaluation of frozen features (DINO's monitor: k = 20, cosine, weights exp(sim / 0.07)).

Features are L2-normalised; each query's k most similar bank entries vote for their class with weight
``exp(sim / T)``; top-1 and top-5 follow from the summed votes. The trained backbone is always reported
beside the same architecture at random initialisation, so learning is visible.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from sdmp_fast.data.folders import DataError, Split
from sdmp_fast.data.images import eval_batches, eval_spec
from sdmp_fast.engine.precision import autocast_context
from sdmp_fast.eval.probe import format_accuracy, percent_correct, topk_correct


@torch.no_grad()
def extract_features(backbone: nn.Module, batches: Iterable, device: torch.device,
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``backbone`` in eval mode over (images, labels) batches; returns (features [N, D] normalised, labels [N])."""
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for x, y in batches:
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast_context(device, dtype):
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


def knn_accuracy(backbone: nn.Module, bank_batches: Iterable, query_batches: Iterable, num_classes: int,
                 device: torch.device, k: int = 20, temperature: float = 0.07,
                 dtype: torch.dtype = torch.float32) -> dict[str, float]:
    bank, bank_labels = extract_features(backbone, bank_batches, device, dtype)
    queries, query_labels = extract_features(backbone, query_batches, device, dtype)
    scores = knn_classify(bank, bank_labels, queries, num_classes, k=k, temperature=temperature)
    return percent_correct(topk_correct(scores, query_labels), len(query_labels), num_classes)


def knn_report(models: dict[str, nn.Module], train: Split, val: Split | None, device: torch.device, *,
               image_size: int, interpolation: str, mean, std, bank: int, queries: int, k: int, num_workers: int,
               temperature: float = 0.07, batch_size: int = 256, dtype: torch.dtype = torch.float32) -> dict:
    """k-NN accuracy of each model (``{"trained": ..., "random_init": ...}``) on one fixed bank and query set.

    The bank is a fixed subset of ``bank`` train images (seed 0: comparable across runs and seeds); the
    queries are the first ``queries`` (0 = all) val images, or disjoint held-out train images without a val split.
    """
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(train), generator=g).tolist()
    bank_idx = sorted(perm[:bank])
    if val is not None:
        query_split = val
        n = len(val) if queries == 0 else min(queries, len(val))
        query_idx = list(range(n))
        query_name = f"{val.root.name} split"
    else:  # no val split: disjoint held-out train images
        query_split = train
        rest = perm[bank:]
        query_idx = sorted(rest[:queries or 10000])
        query_name = "held-out train images (no val split)"
    if not query_idx:
        raise DataError("k-NN: no query images left; lower the bank size (run.knn_bank / knn.bank) or add a val split")
    spec = eval_spec(image_size, interpolation)
    out = {"k": k, "bank": len(bank_idx), "queries": len(query_idx), "query_set": query_name}
    for name, model in models.items():
        model = model.to(device)
        bank_batches = eval_batches(train, bank_idx, spec, mean, std, batch_size, num_workers)
        query_batches = eval_batches(query_split, query_idx, spec, mean, std, batch_size, num_workers)
        out[name] = knn_accuracy(model, bank_batches, query_batches, len(train.classes), device, k=k,
                                 temperature=temperature, dtype=dtype)
    return out


def format_report(knn: dict) -> str:
    return (f"k-NN (k={knn['k']}, bank {knn['bank']} train images, {knn['queries']} {knn['query_set']}):\n"
            f"{format_accuracy('trained', knn['trained'])}\n{format_accuracy('random init', knn['random_init'])}")
