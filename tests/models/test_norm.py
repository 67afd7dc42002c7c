"""ChunkedSyncBatchNorm in one process: nn.BatchNorm on each chunk (values, gradients; running stats as k forwards in turn)."""
import pytest
import torch
from torch import nn

from sdmp_fast.models.norm import ChunkedSyncBatchNorm, bn_chunks, convert_batchnorm


@pytest.mark.parametrize("shape, chunks, affine", [((12, 5), 1, True), ((12, 5), 3, False), ((8, 4, 3, 3), 2, True)])
def test_equals_torch_batchnorm_per_chunk(shape, chunks, affine):
    torch.manual_seed(0)
    C = shape[1]
    ours = ChunkedSyncBatchNorm(C, affine=affine)
    refs = [(nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(C, affine=affine) for _ in range(chunks)]
    if affine:
        with torch.no_grad():
            ours.weight.uniform_(0.5, 1.5)
            ours.bias.uniform_(-0.5, 0.5)
        for r in refs:
            r.load_state_dict(ours.state_dict(), strict=False)
    x = torch.randn(shape) * 3 + 1
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(shape)
    with bn_chunks(ours, chunks):
        assert ours.chunks == chunks
        y = ours(x1)
    assert ours.chunks == 1
    y_ref = torch.cat([r(c) for r, c in zip(refs, x2.chunk(chunks))])
    assert torch.allclose(y, y_ref, atol=1e-5)
    (y * g).sum().backward()
    (y_ref * g).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-4)
    if affine:
        assert torch.allclose(ours.weight.grad, sum(r.weight.grad for r in refs), atol=1e-4)
    # running statistics: one BatchNorm applied to the chunks in turn (k separate forwards)
    seq = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(C, affine=False)
    for c in x.chunk(chunks):
        seq(c)
    assert torch.allclose(ours.running_mean, seq.running_mean, atol=1e-5)
    assert torch.allclose(ours.running_var, seq.running_var, atol=1e-4)
    assert int(ours.num_batches_tracked) == chunks
    ours.eval()
    refs[0].eval()
    refs[0].running_mean.copy_(ours.running_mean)
    refs[0].running_var.copy_(ours.running_var)
    assert torch.allclose(ours(x), refs[0](x), atol=1e-5)


def test_convert_keeps_state_and_names_and_rejects_bad_chunks():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    with torch.no_grad():
        net[1].running_mean.fill_(0.3)
    keys = set(net.state_dict())
    net = convert_batchnorm(net)
    assert isinstance(net[1], ChunkedSyncBatchNorm) and set(net.state_dict()) == keys
    assert torch.allclose(net[1].running_mean, torch.full((4,), 0.3))
    with bn_chunks(net, 3), pytest.raises(ValueError, match="not divisible into 3 chunks"):
        net(torch.randn(4, 3, 5, 5))
