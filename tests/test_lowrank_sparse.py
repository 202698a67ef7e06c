"""lowrank.sparse_decomp: the input-channel basis change is exact, its truncation loses
exactly the singular-value tail, pruning reaches the requested sparsity, and the file of the
sparse network is smaller (on the zoo's trained kernels)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import sample_input

from workbench import codec, measure, zoo
from workbench.lowrank.sparse import (
    KernelL1,
    SparseBasisConv2d,
    SparseDecomp,
    from_basis,
    input_basis,
    kernel_sparsity,
    to_basis,
)
from workbench.prune.magnitude import magnitude_mask
from workbench.train import quiet


@pytest.fixture(scope="module")
def vgg():
    return zoo.pretrained("vgg_small")


@pytest.fixture(scope="module")
def lenet5():
    return zoo.pretrained("lenet5")


def trained_kernel(vgg, index=10):
    return vgg.features[index].weight.detach().double()       # 64 -> 64, 3x3


def test_basis_is_orthonormal_and_the_change_is_lossless(vgg):
    k = trained_kernel(vgg)
    p = input_basis(k)
    assert p.shape == (64, 64)
    torch.testing.assert_close(p @ p.T, torch.eye(64, dtype=p.dtype), atol=1e-12, rtol=0)
    assert torch.linalg.matrix_rank(p) == 64                       # invertible
    torch.testing.assert_close(from_basis(to_basis(k, p), p), k, atol=1e-12, rtol=0)


def test_truncated_basis_loses_the_singular_value_tail(vgg):
    """Keeping r basis channels is a rank-r approximation along the input mode: its squared
    error is the sum of the squared trailing singular values (Eckart-Young)."""
    k = trained_kernel(vgg)
    sigma = torch.linalg.svdvals(k.transpose(0, 1).reshape(64, -1))
    for r in (8, 32):
        p = input_basis(k, r)
        error = (from_basis(to_basis(k, p), p) - k).pow(2).sum()
        torch.testing.assert_close(error, sigma[r:].pow(2).sum(), rtol=1e-9, atol=1e-12)


def test_the_basis_concentrates_energy_so_pruning_loses_less(vgg):
    """On trained kernels, 90 % magnitude pruning in the singular basis throws away less of the
    kernel's energy than the same pruning of the original kernel (the point of the basis)."""
    for index in (3, 10, 17):
        k = trained_kernel(vgg, index)
        kp = to_basis(k, input_basis(k))
        lost_basis = (kp * (1 - magnitude_mask(kp, 0.9))).pow(2).sum()
        lost_plain = (k * (1 - magnitude_mask(k, 0.9))).pow(2).sum()
        assert lost_basis < lost_plain


@pytest.mark.parametrize("index", [0, 3, 10])
def test_decomposed_layer_equals_the_conv_at_zero_sparsity(vgg, index):
    conv = vgg.features[index].double()
    layer = SparseBasisConv2d.from_conv(conv).double()
    x = torch.randn(2, conv.in_channels, 16, 16, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.conv2d(x, conv.weight, conv.bias, conv.stride,
                                                      conv.padding), atol=1e-10, rtol=0)
    vgg.float()


def test_method_at_zero_sparsity_keeps_the_network(vgg):
    out = SparseDecomp(sparsity=0.0, penalty_epochs=0, epochs=0).apply(vgg)
    x = sample_input(vgg)
    with torch.no_grad():
        torch.testing.assert_close(out(x), vgg(x), atol=1e-4, rtol=1e-4)
    assert sum(isinstance(m, SparseBasisConv2d) for m in out.modules()) == 6


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_pruning_reaches_the_requested_sparsity(vgg, scope):
    out = SparseDecomp(sparsity=0.9, scope=scope, penalty_epochs=0, epochs=0).apply(vgg)
    layers = [m for m in out.modules() if isinstance(m, SparseBasisConv2d)]
    total = sum(m.conv.weight.numel() for m in layers)
    assert kernel_sparsity(out) == pytest.approx(round(0.9 * total) / total, abs=1e-12)
    if scope == "layer":
        for m in layers:
            n = m.conv.weight.numel()
            assert n - int(m.conv.weight.count_nonzero()) == round(0.9 * n)
    assert all(not hasattr(m.basis, "weight_mask") for m in layers)   # P stays dense


def test_sparse_file_is_smaller_and_round_trips(vgg):
    out = SparseDecomp(sparsity=0.9, penalty_epochs=0, epochs=0).apply(vgg)
    blob = codec.encode(out)
    assert len(blob) < len(codec.encode(vgg))
    x = sample_input(vgg)
    with torch.no_grad():
        assert torch.equal(codec.decode(blob)(x), out(x))
    rep, base = measure.report(out, latency=False), measure.report(vgg, latency=False)
    assert rep.effective_macs < base.effective_macs


def test_rank_and_layers_knobs(vgg):
    out = SparseDecomp(sparsity=0.0, rank=8, layers=("features.10",), penalty_epochs=0,
                       epochs=0).apply(vgg)
    layer = out.features[10]
    assert isinstance(layer, SparseBasisConv2d) and layer.basis.out_channels == 8
    assert isinstance(out.features[3], torch.nn.Conv2d)
    with pytest.raises(ValueError, match="layers"):
        SparseDecomp(layers=("nope",), epochs=0, penalty_epochs=0).apply(vgg)
    with pytest.raises(ValueError, match="sparsity"):
        SparseDecomp(sparsity=1.5)
    with pytest.raises(ValueError, match="needs data"):
        SparseDecomp().apply(vgg)


def test_l1_hook_adds_the_kernel_penalty(vgg):
    out = SparseDecomp(sparsity=0.0, penalty_epochs=0, epochs=0).apply(vgg)
    layers = [m for m in out.modules() if isinstance(m, SparseBasisConv2d)]
    loss = torch.tensor(1.0)
    got = KernelL1(layers, 1e-3).loss(out, None, None, None, loss)
    expected = 1.0 + 1e-3 * sum(m.conv.weight.abs().sum() for m in layers)
    torch.testing.assert_close(got, expected)


def test_training_keeps_the_pruned_kernels_at_zero_and_is_deterministic(lenet5,
                                                                         mnist_train_small):
    method = SparseDecomp(sparsity=0.9, penalty_epochs=1, epochs=1, l1=1e-4)
    with quiet():
        out = method.apply(lenet5, mnist_train_small)
        again = method.apply(lenet5, mnist_train_small)
    for m in out.modules():
        if isinstance(m, SparseBasisConv2d):
            n = m.conv.weight.numel()
            assert n - int(m.conv.weight.count_nonzero()) == round(0.9 * n)
    first, second = codec.plain_state_dict(out), codec.plain_state_dict(again)
    assert all(torch.equal(first[k], second[k]) for k in first)
    # trained: the kernels are no longer the basis change of the original ones
    plain = SparseDecomp(sparsity=0.9, penalty_epochs=0, epochs=0).apply(lenet5)
    assert not torch.equal(codec.plain_state_dict(plain)["features.2.conv.weight"],
                           first["features.2.conv.weight"])
