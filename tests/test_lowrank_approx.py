"""approx.perforation and approx.frequency against their oracles: the direct convolution at
the kept positions, a brute-force nearest neighbour for the filled ones, scipy's DCT, and
Parseval for the energy kept; on the zoo's trained layers too."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.fft
import torch
from conftest import sample_input

from workbench import codec, measure, zoo
from workbench.lowrank.approx import (
    DCTConv2d,
    Frequency,
    PerforatedConv2d,
    Perforation,
    pack_filters,
)
from workbench.lowrank.approx_tensors import (
    dct2,
    dct_matrix,
    energy_mask,
    idct2,
    lattice_steps,
    quantize_uniform,
)


@pytest.fixture(scope="module")
def vgg():
    return zoo.pretrained("vgg_small")


def brute_nearest(h, w, kept_yx):
    """For every (y, x), the first kept position at the smallest Euclidean distance."""
    out = {}
    for y, x in itertools.product(range(h), range(w)):
        d = [(ky - y) ** 2 + (kx - x) ** 2 for ky, kx in kept_yx]
        out[y, x] = kept_yx[int(np.argmin(d))]
    return out


def kept_yx(layer):
    if layer.strategy == "grid":
        return [(int(r), int(c)) for r in layer.rows for c in layer.cols]
    w = layer.out_size[1]
    return [(int(k) // w, int(k) % w) for k in layer.kept]


# ------------------------------------------------------------------ perforation

CASES = [(3, 1, 1, 12), (3, 2, 1, 13), (5, 1, 0, 14), (3, 1, 2, 11)]   # k, stride, pad, size


@pytest.mark.parametrize("strategy", ["grid", "uniform"])
@pytest.mark.parametrize("k, stride, pad, size", CASES)
@pytest.mark.parametrize("rate", [0.5, 0.75])
def test_perforated_conv_is_exact_where_kept_and_nearest_elsewhere(strategy, k, stride, pad,
                                                                  size, rate):
    g = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, k, stride, pad).double()
    x = torch.randn(2, 4, size, size, dtype=torch.float64, generator=g)
    with torch.no_grad():
        dense = conv(x)
        layer = PerforatedConv2d.from_conv(conv, dense.shape[2:], rate, strategy, 1).double()
        y = layer(x)
    h, w = dense.shape[2:]
    kept = kept_yx(layer)
    assert 0 < len(kept) < h * w
    nearest = brute_nearest(h, w, kept)
    for (py, px), (ky, kx) in nearest.items():
        if (py, px) in kept:          # computed: the direct convolution's value
            torch.testing.assert_close(y[:, :, py, px], dense[:, :, py, px], atol=1e-12, rtol=0)
        else:                          # filled: its nearest computed neighbour's value
            assert torch.equal(y[:, :, py, px], y[:, :, ky, kx])


@pytest.mark.parametrize("strategy", ["grid", "uniform"])
def test_rate_zero_is_the_dense_conv_on_a_trained_layer(vgg, strategy):
    conv = vgg.features[3]
    x = torch.randn(2, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    layer = PerforatedConv2d.from_conv(conv, (32, 32), 0.0, strategy)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x), atol=1e-5, rtol=1e-5)
    assert layer.kept_positions() == 32 * 32


def test_grid_rates_and_counted_macs(vgg):
    assert lattice_steps(0.5) == (2, 1) and lattice_steps(0.75) == (2, 2)
    assert lattice_steps(0.0) == (1, 1)
    out = Perforation(rate=0.75, epochs=0).apply(vgg)
    rows = measure.layer_table(out, vgg.input_shape)
    dense = measure.layer_table(vgg, vgg.input_shape)
    for row, base in zip(rows, dense):
        if row["type"] == "PerforatedConv2d":
            layer = out.get_submodule(row["layer"])
            h, w = layer.out_size
            assert row["macs"] * h * w == base["macs"] * layer.kept_positions()
            assert layer.kept_positions() * 4 >= h * w     # about a quarter kept
    assert measure.report(out, latency=False).macs < measure.report(vgg, latency=False).macs


def test_perforated_network_round_trips_and_checks_its_input_size(vgg):
    out = Perforation(rate=0.5, strategy="uniform", seed=3, epochs=0).apply(vgg)
    x = sample_input(vgg)
    blob = codec.encode(out)
    with torch.no_grad():
        assert torch.equal(codec.decode(blob)(x), out(x))
    with pytest.raises(ValueError, match="built for 32x32"):
        out.features[0](torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="layers"):
        Perforation(layers=("classifier.1",), epochs=0).apply(vgg)


def test_finetuning_trains_through_the_perforated_layers(mnist_train_small):
    from workbench.train import quiet
    base = zoo.pretrained("lenet5")
    with quiet():
        tuned = Perforation(rate=0.5, epochs=1).apply(base, mnist_train_small)
    plain = Perforation(rate=0.5, epochs=0).apply(base)
    assert not torch.equal(tuned.features[2].weight, plain.features[2].weight)


# ------------------------------------------------------------------ frequency

def test_dct_is_scipys_orthonormal_dct():
    for n in (3, 5):
        d = dct_matrix(n)
        torch.testing.assert_close(d @ d.T, torch.eye(n, dtype=d.dtype), atol=1e-14, rtol=0)
        v = np.random.default_rng(n).standard_normal((4, n, n))
        ours = dct2(torch.from_numpy(v)).numpy()
        np.testing.assert_allclose(ours, scipy.fft.dctn(v, axes=(1, 2), norm="ortho"),
                                   atol=1e-12)


def test_inverse_dct_gives_back_trained_filters(vgg):
    w = vgg.features[10].weight.detach().double()
    torch.testing.assert_close(idct2(dct2(w)), w, atol=1e-14, rtol=0)
    # Parseval: the energy is the same in both domains
    torch.testing.assert_close(dct2(w).pow(2).sum(), w.pow(2).sum(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("energy", [0.5, 0.8, 0.95, 1.0])
def test_energy_mask_keeps_the_fraction_with_the_fewest_coefficients(vgg, energy):
    c = dct2(vgg.features[10].weight.detach().double())
    mask = energy_mask(c, energy)
    total, kept = c.pow(2).sum(), (c * mask).pow(2).sum()
    assert kept >= energy * total * (1 - 1e-12)
    if energy < 1:          # the fewest: without its smallest kept entry it falls short
        smallest = (c.abs() + (~mask) * 1e9).min()
        assert kept - smallest ** 2 < energy * total


@pytest.mark.parametrize("energy", [0.7, 0.9])
def test_layer_without_clusters_keeps_the_requested_energy(vgg, energy):
    conv = vgg.features[10]
    packed = pack_filters(conv.weight, clusters=0, energy=energy, bits=None)
    w = conv.weight.detach().double()
    rebuilt = idct2(packed["residual"])
    kept = rebuilt.pow(2).sum() / w.pow(2).sum()      # Parseval: what the DCT mask kept
    assert energy * (1 - 1e-9) <= kept < energy + 0.01


def test_no_dropping_no_clustering_is_lossless(vgg):
    out = Frequency(clusters=0, energy=1.0, bits=None).apply(vgg)
    assert isinstance(out.features[10], DCTConv2d)
    # the same kernel up to float32 rounding of the two transforms
    torch.testing.assert_close(out.features[10].spatial_weight(), vgg.features[10].weight,
                               atol=1e-5, rtol=0)
    x = sample_input(vgg)
    with torch.no_grad():
        torch.testing.assert_close(out(x), vgg(x), atol=1e-4, rtol=1e-4)


def test_clusters_and_quantized_residuals(vgg):
    w = vgg.features[10].weight
    packed = pack_filters(w, clusters=16, energy=0.9, bits=4)
    assert packed["centres"].shape == (16, 3, 3)
    assert packed["assign"].shape == (64, 64) and int(packed["assign"].max()) < 16
    r = packed["residual"]
    assert len(torch.unique(r)) <= 2 ** 4 - 1
    torch.testing.assert_close(quantize_uniform(r, 4), r)      # already on the grid
    # the centre is the mean of its filters' DCT vectors (k-means), before dropping
    coeffs = dct2(w.detach().double()).reshape(-1, 3, 3)
    labels = packed["assign"].reshape(-1)
    member = coeffs[labels == labels[0]].mean(0)
    kept = packed["centres"][labels[0]] != 0
    torch.testing.assert_close(packed["centres"][labels[0]][kept], member[kept], atol=1e-6,
                               rtol=1e-6)


def test_file_is_smaller_and_round_trips(vgg):
    out = Frequency(clusters=16, energy=0.9, bits=6).apply(vgg)
    blob = codec.encode(out)
    dense = codec.encode(vgg, formats=("dense",), dtype="float32")
    assert len(blob) * 3 < len(dense)
    header = {t["name"]: t for t in codec.read_header(blob)["tensors"]}
    assert header["features.10.assign"]["dtype"] == "uint8"
    assert header["features.10.residual"]["format"] != "dense"     # sparse, few values
    x = sample_input(vgg)
    with torch.no_grad():
        assert torch.equal(codec.decode(blob)(x), out(x))
    with pytest.raises(ValueError, match="bits"):
        Frequency(bits=1)
    assert not Frequency().supports(zoo.pretrained("lenet300"))


def test_grid_rate_is_the_lattice_rate_and_a_rate_it_cannot_skip_is_refused():
    """A grid skips 1 - 1/(row step x column step) of the positions: the settings say which
    share runs, and a rate that rounds to "skip nothing" is refused rather than run dense."""
    assert Perforation(rate=0.6).settings()["rate used"] == 0.5
    assert Perforation(rate=0.7).settings()["rate used"] == 0.75
    assert "rate used" not in Perforation(rate=0.6, strategy="uniform").settings()
    Perforation(rate=0.0)                         # no perforation: allowed, the dense layer
    with pytest.raises(ValueError, match="rounds to 0.*strategy='uniform'"):
        Perforation(rate=0.2)
    Perforation(rate=0.2, strategy="uniform")     # any rate
