"""The weighted k-NN vote on features and through a model."""
import torch
import torch.nn.functional as F

from sdmp_fast.eval.knn import knn_accuracy, knn_classify
from sdmp_fast.eval.probe import percent_correct, topk_correct


def top1(scores, labels) -> float:
    return percent_correct(topk_correct(scores, labels, ks=(1,)), len(labels), scores.shape[1], ks=(1,))["top1"]


def test_knn_on_separable_toy_set():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 3
    def draw(n):
        y = torch.arange(n) % 4
        return centers[y] + 0.3 * torch.randn(n, 16, generator=g), y
    bx, by = draw(200)
    qx, qy = draw(80)
    nb, nq = F.normalize(bx, dim=1), F.normalize(qx, dim=1)
    scores = knn_classify(nb, by, nq, num_classes=4, k=20, chunk=16)
    assert top1(scores, qy) == 100.0
    # shuffled bank labels: chance level
    perm = torch.randperm(200, generator=g)
    assert top1(knn_classify(nb, by[perm], nq, 4, k=20), qy) < 60


def test_knn_weights_votes_by_similarity():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    q = F.normalize(torch.tensor([[1.0, 0.05]]), dim=1)
    # two far neighbours of class 1 lose to one very close neighbour of class 0 with T = 0.07
    assert knn_classify(bank, labels, q, num_classes=2, k=3).argmax(1).item() == 0


def test_knn_accuracy_end_to_end_with_a_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8))
    x = torch.randn(40, 3, 2, 2)
    y = torch.arange(40) % 2
    x[y == 1] += 2.0
    batches = [(x[i:i + 10], y[i:i + 10]) for i in range(0, 40, 10)]
    acc = knn_accuracy(model, batches, batches, num_classes=2, device=torch.device("cpu"), k=5)
    assert acc["top1"] > 90
