"""Tucker-2, CP and block-term decompositions of convolution kernels (workbench.lowrank.tensor),
against their oracles: the exact full-rank reconstruction, tensorly's reconstruction and
fits, the HOSVD error bound, F.conv2d with the rebuilt kernel, a synthetic matrix of known
rank for VBMF, and measure's MAC count for the cost formulas. Trained kernels of the zoo's
VGG-small and ResNet-20, since random kernels are nearly full-rank."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import sample_input, untrained
from torch import nn

from workbench import codec, measure, models, zoo
from workbench.lowrank import tensor as T
from workbench.lowrank import tensor_tensors as tt

tl = pytest.importorskip("tensorly")


@pytest.fixture(scope="module")
def vgg():
    return zoo.pretrained("vgg_small")


@pytest.fixture(scope="module")
def resnet():
    return zoo.pretrained("resnet20")


def kernel(model, name):
    return model.get_submodule(name).weight.detach()


def conv_like(w: torch.Tensor, stride=1, padding=1, dilation=1, bias=True, seed=0):
    """A float64 Conv2d carrying kernel ``w`` (and a random bias)."""
    conv = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), stride, padding, dilation,
                     bias=bias).double()
    with torch.no_grad():
        conv.weight.copy_(w)
        if bias:
            conv.bias.copy_(torch.randn(w.shape[0], generator=torch.Generator().manual_seed(
                seed), dtype=torch.float64))
    return conv


def images(channels, size=9, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=g, dtype=torch.float64)


# ------------------------------------------------------------------ Tucker-2


@pytest.mark.parametrize("name, stride", [("features.10", 1), ("stages.1.0.conv1", 2)])
def test_full_rank_tucker_is_exact_and_its_convs_compute_the_layer(vgg, resnet, name, stride):
    w = kernel(vgg if name.startswith("features") else resnet, name).double()
    core, u, v = tt.tucker2(w, w.shape[0], w.shape[1])
    assert tt.relative_error(w, tt.tucker2_to_kernel(core, u, v)) < 1e-12
    conv = conv_like(w, stride=stride)
    layer = T.Tucker2Conv.from_factors(conv, core[None], u[None], v[None]).double()
    x = images(w.shape[1])
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-10, atol=1e-10)


def test_tucker_factors_compose_as_tensorly_reconstructs_them(vgg):
    w = kernel(vgg, "features.7").double()
    core, u, v = tt.tucker2(w, 20, 12)
    ours = tt.tucker2_to_kernel(core, u, v)
    theirs = tl.tenalg.multi_mode_dot(core.numpy(), [u.numpy(), v.numpy()], modes=[0, 1])
    torch.testing.assert_close(ours, torch.from_numpy(theirs))
    layer = T.Tucker2Conv.from_factors(conv_like(w), core[None], u[None], v[None]).double()
    with torch.no_grad():
        torch.testing.assert_close(tt.layer_kernel(layer), ours)
    # orthonormal bases, and the HOSVD error bound: the squared error is at most the discarded
    # squared singular values of the two unfoldings
    torch.testing.assert_close(u.T @ u, torch.eye(20, dtype=torch.float64))
    s0, s1 = tt.singular_values(w, 0), tt.singular_values(w, 1)
    bound = ((s0[20:] ** 2).sum() + (s1[12:] ** 2).sum()) / (w ** 2).sum()
    assert tt.relative_error(w, ours) ** 2 <= bound + 1e-12


def test_hosvd_is_close_to_tensorlys_iterative_tucker(vgg):
    """tensorly's partial_tucker (HOOI) is the better fit by construction; one-pass HOSVD is
    within 5% of its error on a trained kernel, and our block-term ALS with one block (an
    alternating least-squares Tucker-2) reaches it."""
    from tensorly.decomposition import partial_tucker
    w = kernel(vgg, "features.3").double()
    (core, factors), _ = partial_tucker(w.numpy(), rank=[8, 8], modes=[0, 1], init="svd",
                                        n_iter_max=50)
    hooi = tt.relative_error(w, torch.from_numpy(
        tl.tenalg.multi_mode_dot(core, factors, modes=[0, 1])))
    hosvd = tt.relative_error(w, tt.tucker2_to_kernel(*tt.tucker2(w, 8, 8)))
    assert hooi - 1e-9 <= hosvd <= 1.05 * hooi
    assert tt.block_term(w, 1, 8, 8, sweeps=20)[3][-1] <= 1.002 * hooi


@pytest.mark.parametrize("shape, rank", [((60, 200), 5), ((200, 60), 9), ((64, 576), 12)])
def test_vbmf_finds_the_rank_of_low_rank_plus_noise(shape, rank):
    g = torch.Generator().manual_seed(rank)
    low = torch.randn(shape[0], rank, generator=g, dtype=torch.float64) @ \
        torch.randn(rank, shape[1], generator=g, dtype=torch.float64)
    noise = torch.randn(*shape, generator=g, dtype=torch.float64)
    assert tt.evbmf_rank(low + 0.5 * noise) == rank
    assert tt.evbmf_rank(noise) <= 1          # pure noise: (almost) nothing kept


def test_energy_rank_keeps_the_share_asked():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0])      # squares 16, 4, 1, 1 of 22
    assert [tt.energy_rank(s, e) for e in (0.5, 16 / 22, 0.8, 0.95, 1.0)] == [1, 1, 2, 3, 4]


def test_tucker_method_ranks_and_records(vgg):
    out = T.Tucker(epochs=0, ranks_by="vbmf").apply(vgg)
    info = models.attached(out, "tensor_decomposition")
    w = kernel(vgg, "features.17")
    expected = [tt.evbmf_rank(tt.unfold(w, 0)), tt.evbmf_rank(tt.unfold(w, 1))]
    assert info["layers"]["features.17"]["ranks"] == expected
    assert isinstance(out.get_submodule("features.17"), T.Tucker2Conv)
    energy = T.Tucker(epochs=0, ranks_by="energy", energy=0.8).ranks(w)
    assert energy == tuple(tt.energy_rank(tt.singular_values(w, m), 0.8) for m in (0, 1))


# ------------------------------------------------------------------ CP


@pytest.mark.parametrize("stride, padding, dilation, size", [
    (1, 1, 1, (3, 3)), (2, 1, 1, (3, 3)), ((2, 1), (2, 0), (1, 2), (5, 3))])
def test_cp_four_convs_compute_the_conv_of_the_rebuilt_kernel(vgg, stride, padding, dilation,
                                                               size):
    w = kernel(vgg, "features.7").double()
    if size != (3, 3):     # a non-square kernel, to check the vertical / horizontal split
        w = torch.randn(24, 16, *size, generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64)
    factors, _ = tt.cp_als(w, 10, iterations=10)
    conv = conv_like(w, stride, padding, dilation)
    layer = T.CPConv.from_factors(conv, factors).double()
    x = images(w.shape[1], size=11)
    with torch.no_grad():
        expected = F.conv2d(x, tt.cp_to_kernel(factors), conv.bias, stride, padding, dilation)
        torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(tt.layer_kernel(layer), tt.cp_to_kernel(factors))


def test_cp_als_fits_as_well_as_tensorly_parafac(vgg):
    from tensorly.decomposition import parafac
    w = kernel(vgg, "features.3").double()
    factors, errors = tt.cp_als(w, 8, iterations=40, tol=0)
    ours = tt.relative_error(w, tt.cp_to_kernel(factors))
    assert ours == pytest.approx(min(errors), abs=1e-9)       # the error it reports is real
    assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:]))   # ALS does not diverge
    cp = parafac(w.numpy(), 8, n_iter_max=40, init="svd", tol=0, random_state=0)
    theirs = tt.relative_error(w, torch.from_numpy(tl.cp_to_tensor(cp)))
    assert ours <= theirs + 0.01


# ------------------------------------------------------------------ block term


def test_one_block_is_tucker2_and_sweeps_only_improve(vgg):
    w = kernel(vgg, "features.10").double()
    cores, us, vs, errors = tt.block_term(w, 1, 16, 12, sweeps=0)
    core, u, v = tt.tucker2(w, 16, 12)
    torch.testing.assert_close(tt.block_term_to_kernel(cores, us, vs),
                               tt.tucker2_to_kernel(core, u, v))
    conv = conv_like(w)
    x = images(64)
    with torch.no_grad():
        torch.testing.assert_close(T.Tucker2Conv.from_factors(conv, cores, us, vs)(x),
                                   T.Tucker2Conv.from_factors(conv, core[None], u[None],
                                                              v[None])(x))
    _, _, _, errors = tt.block_term(w, 4, 4, 3, sweeps=5)
    assert all(b <= a + 1e-9 for a, b in zip(errors, errors[1:]))
    assert errors[-1] < errors[0]


def test_block_term_convs_compute_the_sum_of_blocks(vgg):
    w = kernel(vgg, "features.7").double()
    cores, us, vs, _ = tt.block_term(w, 3, 5, 4, sweeps=2)
    conv = conv_like(w, stride=2)
    layer = T.Tucker2Conv.from_factors(conv, cores, us, vs).double()
    assert layer.core.groups == 3
    x = images(32)
    with torch.no_grad():
        expected = F.conv2d(x, tt.block_term_to_kernel(cores, us, vs), conv.bias, 2, 1)
        torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ on trained networks


def test_error_decreases_with_rank_on_trained_kernels(vgg, resnet):
    for w in (kernel(vgg, "features.14"), kernel(resnet, "stages.2.1.conv2")):
        tucker = [tt.relative_error(w, tt.tucker2_to_kernel(*tt.tucker2(w, r, r)))
                  for r in (8, 16, 32, 64)]
        cp = [tt.relative_error(w, tt.cp_to_kernel(tt.cp_als(w, r, 15)[0])) for r in (8, 32)]
        block = [tt.block_term(w, 2, r, r, sweeps=2)[3][-1] for r in (4, 8, 16)]
        for errors in (tucker, cp, block):
            assert all(b < a for a, b in zip(errors, errors[1:])), errors
        assert tucker[-1] < 0.9 * tucker[0]


def test_cost_formulas_match_measures_mac_count(resnet):
    """tucker_cost / cp_cost per output pixel x output pixels = the MACs measure counts on
    the chain (the stride-2 conv's first 1x1 runs at the input's resolution)."""
    for method, cost in ((T.Tucker(epochs=0, ranks_by="ratio", rank_ratio=0.5),
                          lambda c, m: tt.tucker_cost(c, m.config["rank_out"],
                                                     m.config["rank_in"])),
                         (T.CP(epochs=0, rank_ratio=0.5, iterations=2),
                          lambda c, m: tt.cp_cost(c, m.config["rank"]))):
        out = method.apply(resnet)
        table = {r["layer"]: r for r in measure.layer_table(out, (3, 32, 32))}
        for name in ("stages.1.0.conv1", "stages.2.2.conv2"):
            conv, chain = resnet.get_submodule(name), out.get_submodule(name)
            pixels = {"stages.1.0.conv1": 16 * 16, "stages.2.2.conv2": 8 * 8}[name]
            macs = sum(table[f"{name}.{part}"]["macs"] for part in
                       ("first", "core", "last", "vertical", "horizontal")
                       if f"{name}.{part}" in table)
            assert macs == cost(conv, chain) * pixels


@pytest.mark.parametrize("method", [T.Tucker(epochs=0, ranks_by="vbmf"),
                                    T.CP(epochs=0, rank_ratio=0.5, iterations=3),
                                    T.BlockTerm(epochs=0, blocks=2, sweeps=1)],
                         ids=lambda m: m.id)
def test_codec_round_trip_is_identical(method):
    model = untrained("resnet20", seed=3)
    out = method.apply(model)
    x = sample_input(out)
    assert any(isinstance(m, (T.Tucker2Conv, T.CPConv)) for m in out.modules())
    with torch.no_grad():
        assert torch.equal(codec.decode(codec.encode(out))(x), out(x))


def test_layer_choice_and_bad_settings(vgg):
    out = T.Tucker(epochs=0, ranks_by="ratio", layers=("features.10",)).apply(vgg)
    kinds = {n: type(m).__name__ for n, m in out.named_children()}
    assert isinstance(out.get_submodule("features.10"), T.Tucker2Conv)
    assert isinstance(out.get_submodule("features.3"), nn.Conv2d) and kinds
    with pytest.raises(ValueError, match="layers"):
        T.CP(epochs=0, layers=("features.99",)).apply(vgg)
    with pytest.raises(ValueError, match="layers"):
        T.Tucker(epochs=0, layers=("classifier.1",)).apply(vgg)
    with pytest.raises(ValueError, match="needs data"):
        T.BlockTerm().apply(vgg)
    with pytest.raises(ValueError, match="ranks_by"):
        T.Tucker(ranks_by="svd")
    assert not T.Tucker().supports(zoo.pretrained("lenet300"))


@pytest.mark.parametrize("make, cost", [
    (lambda s: T.Tucker(epochs=0, ranks_by="ratio", rank_ratio=0.5, min_saving=s),
     lambda m, conv: tt.tucker_cost(conv, *m.ranks(conv.weight.detach()))),
    (lambda s: T.CP(epochs=0, rank_ratio=0.25, iterations=1, min_saving=s),
     lambda m, conv: tt.cp_cost(conv, math.ceil(0.25 * conv.out_channels)))],
    ids=["tucker", "cp"])
def test_min_saving_keeps_the_layers_whose_chain_saves_too_little(vgg, make, cost):
    """A layer is decomposed exactly when its chain costs at most (1 - min_saving) of it:
    VGG-small's first conv (3 input channels) saves little and stays dense by default."""
    for saving in (0.0, 0.25, 0.7):
        method = make(saving)
        out = method.apply(vgg)
        for name in method.candidates(vgg):
            conv = vgg.get_submodule(name)
            share = cost(method, conv) / tt.dense_cost(conv)
            replaced = not isinstance(out.get_submodule(name), nn.Conv2d)
            assert replaced == (share <= 1 - saving and share < 1), (saving, name, share)
    first = vgg.get_submodule("features.0")
    tucker = T.Tucker(epochs=0, ranks_by="ratio", rank_ratio=0.5)
    assert 0.75 < tt.tucker_cost(first, *tucker.ranks(first.weight)) / tt.dense_cost(first) < 1
    assert isinstance(tucker.apply(vgg).get_submodule("features.0"), nn.Conv2d)
    for bad in (-0.1, 1.0, "x"):
        with pytest.raises(ValueError, match="min_saving"):
            make(bad)
