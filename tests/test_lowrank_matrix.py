"""Truncated SVD, separable filters and channel decomposition (``lowrank.matrix``): each
against its oracle on trained zoo layers (random kernels are nearly full rank).

- SVD: the error of the factorized layer is the tail of torch.linalg.svd's singular values,
  in Frobenius and spectral norm (Eckart-Young); measure counts k(m + n) MACs for it.
- Separable: the composed kernel is the rank-r truncated SVD of the kernel reshaped to
  (in*kh) x (out*kw); at full rank the pair computes the original convolution.
- Channel: on the sampled responses the error is the tail of the response covariance's
  eigenvalues (torch.linalg.eigvalsh); on held-out images it beats a weights-only SVD of the
  same rank.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench import codec, data, measure, train, zoo
from workbench.lowrank.matrix import SVD, Channel, Separable
from workbench.lowrank.matrix_tensors import (LowRankConv2d, LowRankLinear, SeparableConv2d,
                                              rank_from, sampled_responses, separable_factors,
                                              separable_matrix, truncated_svd)


@pytest.fixture(scope="module")
def lenet300():
    return zoo.pretrained("lenet300")


@pytest.fixture(scope="module")
def lenet5():
    return zoo.pretrained("lenet5")


@pytest.fixture(scope="module")
def vgg():
    return zoo.pretrained("vgg_small")


@pytest.fixture(scope="module")
def mnist_train():
    return data.mnist("train").subset(256, seed=0)

FACTORIZED = {LowRankLinear, LowRankConv2d, SeparableConv2d}


def svd_oracle(matrix: torch.Tensor):
    return torch.linalg.svd(matrix.detach().double(), full_matrices=False)


# ------------------------------------------------------------------ lowrank.svd


@pytest.mark.parametrize("rank", [1, 10, 50, 299])
def test_svd_error_is_the_tail_of_the_singular_values(lenet300, rank):
    """Eckart-Young on fc1 of the trained LeNet-300-100: ||W - W_k||_F^2 = sum of s_i^2 for
    i > k and ||W - W_k||_2 = s_{k+1}."""
    w = lenet300.net[1].weight.detach().double()
    _, s, _ = svd_oracle(w)
    left, right = truncated_svd(w, rank)
    error = w - left @ right
    assert torch.allclose(torch.linalg.matrix_norm(error) ** 2, (s[rank:] ** 2).sum(),
                          rtol=1e-9, atol=1e-12)
    assert torch.allclose(torch.linalg.matrix_norm(error, ord=2), s[rank], rtol=1e-9)
    # the float32 layer holds the same factors: its product differs only by rounding
    layer = LowRankLinear.from_linear(lenet300.net[1], rank)
    assert layer.first.weight.shape == (rank, 784) and layer.second.weight.shape == (300, rank)
    stored = (w - layer.weight_product().double()).norm()
    assert abs(stored - error.norm()) < 1e-4 * w.norm()


def test_svd_layer_computes_the_rank_k_matrix_and_keeps_the_bias(lenet300):
    fc = lenet300.net[1]
    layer = LowRankLinear.from_linear(fc, 20)
    x = torch.randn(8, 784, generator=torch.Generator().manual_seed(0))
    u, s, vh = svd_oracle(fc.weight)
    w20 = (u[:, :20] * s[:20]) @ vh[:20]
    expected = x.double() @ w20.T + fc.bias.double()
    with torch.no_grad():
        assert torch.allclose(layer(x).double(), expected, atol=1e-4)
    assert layer.first.bias is None and torch.equal(layer.second.bias, fc.bias)


def test_svd_method_macs_are_k_times_m_plus_n(lenet300):
    out = SVD(rank=30, layers=("net.1", "net.3")).apply(lenet300)
    assert isinstance(out.net[1], LowRankLinear) and isinstance(out.net[3], LowRankLinear)
    assert isinstance(out.net[5], nn.Linear)
    rows = {r["layer"]: r for r in measure.layer_table(out, (1, 28, 28))}
    assert rows["net.1.first"]["macs"] + rows["net.1.second"]["macs"] == 30 * (784 + 300)
    assert rows["net.3.first"]["macs"] + rows["net.3.second"]["macs"] == 30 * (300 + 100)
    base, small = measure.report(lenet300, latency=False), measure.report(out, latency=False)
    assert base.macs - small.macs == 784 * 300 + 300 * 100 - 30 * (784 + 300 + 300 + 100)


def test_svd_rank_rules_and_layers_that_would_not_shrink(lenet300):
    rows = {r["layer"]: r for r in SVD(by="energy", energy=0.9).plan(lenet300)}
    for name, row in rows.items():
        s2 = svd_oracle(lenet300.get_submodule(name).weight)[1] ** 2
        share = s2.cumsum(0) / s2.sum()
        k = row["rank"]
        assert share[k - 1] >= 0.9 and (k == 1 or share[k - 2] < 0.9)   # smallest such k
    # the 10 x 100 head: rank 10 is full rank, its factors would hold more weights
    plan = {r["layer"]: r for r in SVD(rank=20).plan(lenet300)}
    assert plan["net.5"]["rank"] == 10 and not plan["net.5"]["factorized"]
    assert isinstance(SVD(rank=20).apply(lenet300).net[5], nn.Linear)
    energies = torch.tensor([4.0, 3.0, 2.0, 1.0])
    assert rank_from(energies, "keep", 1, 0.5, 0.0) == 2
    assert rank_from(energies, "rank", 9, 0.0, 0.0) == 4
    assert rank_from(energies, "energy", 1, 0.0, 0.7) == 2    # 7 of 10 reached at k = 2


def test_svd_of_convolutions_is_the_flattened_kernel_svd(lenet5):
    out = SVD(kinds="conv", rank=8).apply(lenet5)
    layer = out.features[2]
    assert isinstance(layer, LowRankConv2d) and isinstance(out.classifier[1], nn.Linear)
    w = lenet5.features[2].weight.detach().double()
    u, s, vh = svd_oracle(w.reshape(50, -1))
    best = ((u[:, :8] * s[:8]) @ vh[:8]).reshape(w.shape)
    assert torch.allclose(layer.kernel().double(), best, atol=1e-5)


def test_factorized_networks_round_trip_the_codec(lenet300, lenet5, mnist_train):
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    for method, model in ((SVD(rank=16), lenet300), (SVD(kinds="all", rank=6), lenet5),
                          (Separable(rank=3), lenet5),
                          (Channel(rank=6, images=32, positions=4), lenet5)):
        out = method.apply(model, mnist_train)
        decoded = codec.decode(codec.encode(out))
        factorized = {type(m) for m in out.modules()} & FACTORIZED
        assert factorized and factorized <= {type(m) for m in decoded.modules()}, method.id
        with torch.no_grad():
            assert torch.equal(decoded(x), out(x)), method.id


def test_fine_tuning_trains_the_factors(lenet300, mnist_train):
    method = SVD(rank=10, epochs=1, lr=0.01, batch_size=64)
    assert method.tags().needs_data and not SVD(rank=10).tags().needs_data
    with pytest.raises(ValueError, match="needs data"):
        method.apply(lenet300)
    with train.quiet():
        tuned = method.apply(lenet300, mnist_train)
    plain = SVD(rank=10).apply(lenet300)
    assert not torch.equal(tuned.net[1].first.weight, plain.net[1].first.weight)
    assert train.evaluate(tuned, mnist_train) > train.evaluate(plain, mnist_train)


# ------------------------------------------------------------------ lowrank.separable


@pytest.mark.parametrize("rank", [1, 4, 12])
def test_separable_kernel_is_the_truncated_svd_of_the_reshaped_kernel(vgg, rank):
    conv = vgg.features[7]                      # 32 -> 64, 3x3, trained
    w = conv.weight.detach().double()
    layer = SeparableConv2d.from_conv(conv, rank)
    assert layer.vertical.weight.shape == (rank, 32, 3, 1)
    assert layer.horizontal.weight.shape == (64, rank, 1, 3)
    u, s, vh = svd_oracle(separable_matrix(w))
    best = (u[:, :rank] * s[:rank]) @ vh[:rank]                    # (C*kh) x (N*kw)
    composed = separable_matrix(layer.kernel().detach().double())
    assert torch.allclose(composed, best, atol=1e-5)
    # the filter reconstruction error is the singular value tail (optimal, Eckart-Young)
    vertical, horizontal = separable_factors(w, rank)
    error = torch.einsum("kcy,nkx->ncyx", vertical[..., 0], horizontal[:, :, 0]) - w
    assert torch.allclose(error.norm() ** 2, (s[rank:] ** 2).sum(), rtol=1e-9)
    # the two convolutions compute exactly the composed kernel
    x = torch.randn(2, 32, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        direct = F.conv2d(x, layer.kernel(), conv.bias, conv.stride, conv.padding)
        assert torch.allclose(layer(x), direct, atol=1e-4)


def test_separable_at_full_rank_is_the_original_convolution_in_any_geometry():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    full = min(4 * 3, 6 * 5)
    layer = SeparableConv2d.from_conv(conv, full)
    x = torch.randn(2, 4, 11, 13)
    with torch.no_grad():
        assert torch.allclose(layer(x), conv(x), atol=1e-5)
    trained = zoo.pretrained("lenet5").features[2]            # 20 -> 50, 5x5: full rank 100
    layer = SeparableConv2d.from_conv(trained, 100)
    y = torch.randn(3, 20, 12, 12)
    with torch.no_grad():
        assert torch.allclose(layer(y), trained(y), atol=1e-4)


def test_separable_method_replaces_only_kxk_convs(vgg):
    out = Separable(by="keep", keep=0.25).apply(vgg)   # half the rank would not shrink
    kinds = [type(m).__name__ for m in out.features if not isinstance(m, (nn.BatchNorm2d,
             nn.ReLU, nn.MaxPool2d))]
    assert kinds == ["SeparableConv2d"] * 6 and isinstance(out.classifier[1], nn.Linear)
    assert measure.report(out, latency=False).macs < measure.report(vgg, latency=False).macs
    with pytest.raises(ValueError, match="layers"):
        Separable(layers=("classifier.1",)).apply(vgg)
    assert not Separable().supports(zoo.pretrained("lenet300"))


# ------------------------------------------------------------------ lowrank.channel


def test_channel_error_on_the_sampled_responses_is_the_eigenvalue_tail(lenet5, mnist_train):
    name, rank = "features.2", 10
    method = Channel(rank=rank, layers=(name,), images=128, positions=10, seed=3)
    out = method.apply(lenet5, mnist_train)
    assert isinstance(out.features[2], LowRankConv2d) and out.features[2].config["rank"] == rank
    # same images, same positions (the same seed), the layer's inputs unchanged
    y = sampled_responses(lenet5, mnist_train, [name], 128, 10, seed=3)[name].double()
    approx = sampled_responses(out, mnist_train, [name], 128, 10, seed=3)[name].double()
    assert y.shape == (1280, 50)
    eig = torch.linalg.eigvalsh(torch.cov(y.T, correction=0)).flip(0)   # the oracle
    error = ((y - approx) ** 2).sum() / len(y)
    assert torch.allclose(error, eig[rank:].sum(), rtol=1e-3)
    assert error < 0.1 * eig.sum()              # trained responses: a few directions dominate


def test_channel_beats_a_weights_only_svd_on_held_out_images(vgg):
    cifar_train = data.cifar10("train").subset(200, seed=0)
    held_out = data.cifar10("test").subset(100, seed=1)
    name, rank = "features.3", 8                                   # 32 -> 32, 3x3
    channel = Channel(rank=rank, layers=(name,), images=200, positions=10).apply(vgg,
                                                                                 cifar_train)
    weights_only = SVD(kinds="conv", rank=rank, layers=(name,)).apply(vgg)
    assert channel.features[3].config["rank"] == weights_only.features[3].config["rank"]

    def response_error(model):
        y = sampled_responses(vgg, held_out, [name], 100, 20, seed=5)[name]
        return ((sampled_responses(model, held_out, [name], 100, 20, seed=5)[name] - y) ** 2
                ).sum() / (y - y.mean(0)).pow(2).sum()

    assert response_error(channel) < 0.5 * response_error(weights_only)


def test_channel_needs_data_and_checks_its_settings(lenet5):
    assert Channel().tags().needs_data
    with pytest.raises(ValueError, match="needs data"):
        Channel().apply(lenet5)
    with pytest.raises(ValueError, match="layers"):
        Channel(layers=("classifier.1",)).apply(lenet5, data.mnist("train").subset(32))
    with pytest.raises(ValueError, match="layers"):
        Channel(layers=("no.such",)).apply(lenet5, data.mnist("train").subset(32))
    for bad in ({"by": "variance"}, {"energy": 1.5}, {"rank": 0}, {"positions": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Channel(**bad)


def test_named_layers_that_would_not_shrink_are_refused():
    """LeNet-300-100's 10 x 100 head at rank 20 would hold 2,200 weights for 1,000: named
    alone, it is an error, not a silent no-op; named beside fc1, or left to the method, it
    stays dense and the others are factorized."""
    base = zoo.pretrained("lenet300")
    with pytest.raises(ValueError, match=r"none of \['net.5'\] would shrink"):
        SVD(rank=20, layers=("net.5",)).apply(base)
    for out in (SVD(rank=20).apply(base), SVD(rank=20, layers=("net.1", "net.5")).apply(base)):
        assert isinstance(out.net[5], torch.nn.Linear)
        assert isinstance(out.net[1], LowRankLinear)
