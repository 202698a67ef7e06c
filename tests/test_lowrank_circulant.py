"""Circulant projections: the FFT path against the explicit circulant matrix (scipy) times the
sign flips, gradients against the dense path, the projection against least squares on trained
layers, the counted multiplications, and the file."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import sample_input, untrained

from workbench import codec, measure, train, zoo
from workbench.lowrank.circulant import (
    Circulant,
    CirculantLinear,
    circulant_matrix,
    circulant_mults,
    project_to_circulant,
    random_signs,
)


@pytest.mark.parametrize("n_in, n_out", [(64, 64), (50, 20), (20, 50), (784, 300)])
def test_fft_path_equals_the_dense_circulant_matrix(n_in, n_out):
    torch.manual_seed(0)
    layer = CirculantLinear(n_in, n_out, seed=4).double()
    torch.nn.init.normal_(layer.r)
    torch.nn.init.normal_(layer.bias)
    n = max(n_in, n_out)
    d = random_signs(n, 4).double().numpy()
    dense = (scipy.linalg.circulant(layer.r.detach().numpy()) @ np.diag(d))[:n_out, :n_in]
    x = torch.randn(7, n_in, dtype=torch.float64)
    expected = x.numpy() @ dense.T + layer.bias.detach().numpy()
    assert np.allclose(layer(x).detach().numpy(), expected, atol=1e-10)
    assert np.allclose(layer.dense_weight().detach().numpy(), dense, atol=0)
    assert torch.equal(circulant_matrix(layer.r.detach()),
                       torch.from_numpy(scipy.linalg.circulant(layer.r.detach().numpy())))


def test_gradients_match_the_dense_path():
    torch.manual_seed(1)
    layer = CirculantLinear(40, 25, seed=2).double()
    torch.nn.init.normal_(layer.r)
    x = torch.randn(6, 40, dtype=torch.float64, requires_grad=True)
    target = torch.randn(6, 25, dtype=torch.float64)
    torch.nn.functional.mse_loss(layer(x), target).backward()
    fft_grads = (layer.r.grad.clone(), x.grad.clone())
    layer.r.grad, x.grad = None, None
    y = x @ layer.dense_weight().T + layer.bias       # autograd through the explicit matrix
    torch.nn.functional.mse_loss(y, target).backward()
    assert torch.allclose(fft_grads[0], layer.r.grad, atol=1e-12)
    assert torch.allclose(fft_grads[1], x.grad, atol=1e-12)


@pytest.mark.parametrize("layer", ["net.3", "net.5"])
def test_projection_is_the_least_squares_circulant_of_a_trained_layer(layer):
    w = zoo.pretrained("lenet300").get_submodule(layer).weight.detach().double()
    m, k = w.shape
    n = max(m, k)
    d = random_signs(n, 9).double()
    r = project_to_circulant(w, d, n)
    i, j = torch.meshgrid(torch.arange(m), torch.arange(k), indexing="ij")
    design = torch.zeros(m * k, n, dtype=torch.float64)      # entry (i, j) = r[(i-j) mod n] d[j]
    design[torch.arange(m * k), ((i - j) % n).flatten()] = d[j.flatten()]
    best = torch.linalg.lstsq(design, w.flatten()[:, None]).solution.flatten()
    assert torch.allclose(r, best, atol=1e-10)
    fitted = CirculantLinear(k, m, seed=9).double()
    fitted.r.data = r
    residual = (fitted.dense_weight() - w).norm() / w.norm()
    assert 0 < residual < 1                              # N values cannot hold a trained layer


def test_counted_multiplications_and_report():
    out = Circulant(epochs=0).apply(zoo.pretrained("lenet300"))
    assert isinstance(out.net[1], CirculantLinear) and isinstance(out.net[3], CirculantLinear)
    assert isinstance(out.net[5], torch.nn.Linear)       # 100 -> 10: FFTs would cost more
    rows = {r["layer"]: r for r in measure.layer_table(out, (1, 28, 28))}
    assert rows["net.1"]["macs"] == round(2 * 784 * np.log2(784) + 4 * 393 + 784 * np.log2(784))
    assert rows["net.1"]["params"] == 784 + 300
    assert rows["net.5"]["macs"] == 1000
    at64 = circulant_mults(784, 64)
    assert at64 == pytest.approx(2 * 784 * np.log2(784) + 4 * 393 + 784 * np.log2(784) / 64)
    rep = measure.report(out, latency=False)
    assert rep.params == 784 + 300 + 300 + 100 + 1010


def test_file_holds_n_values_per_layer_and_round_trips():
    out = Circulant(epochs=0).apply(zoo.pretrained("lenet300"))
    header = codec.read_header(codec.encode(out))
    shapes = {t["name"]: t["shape"] for t in header["tensors"]}
    assert shapes["net.1.r"] == [784] and shapes["net.3.r"] == [300]
    assert not any("signs" in name for name in shapes)
    x = sample_input(out)
    with torch.no_grad():
        assert torch.equal(codec.decode(codec.encode(out))(x), out(x))


def test_fine_tuning_recovers_accuracy(mnist_train_small, mnist_test_small):
    base = zoo.pretrained("lenet300")
    projected = Circulant(epochs=0).apply(base)
    with train.quiet():
        tuned = Circulant(epochs=3, lr=0.05, batch_size=64).apply(base, mnist_train_small)
    before, after = (train.evaluate(m, mnist_test_small) for m in (projected, tuned))
    assert after > max(before + 0.2, 0.7)


def test_supports_layers_and_bad_settings():
    assert Circulant().supports(untrained("lenet300")) and Circulant().supports(untrained("lenet5"))
    assert not Circulant().supports(untrained("resnet20"))      # only a 64 -> 10 head
    chosen = Circulant(layers=("head.2",), epochs=0).apply(untrained("resnet20"))
    assert isinstance(chosen.head[2], CirculantLinear)          # asked for by name: done
    with pytest.raises(ValueError, match="layers"):
        Circulant(layers=("net.7",), epochs=0).apply(untrained("lenet300"))
    with pytest.raises(ValueError, match="epochs"):
        Circulant(init="scratch", epochs=0)
    with pytest.raises(ValueError, match="init"):
        Circulant(init="svd")
