"""quant.kmeans and quant.trained_kmeans: scalar k-means weight sharing against scikit-learn,
the three initializations by their definitions, k values per layer and the bytes they take,
and trained centroids whose gradient is the sum of their weights' gradients."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import sample_input, untrained
from sklearn.cluster import KMeans as SKLearnKMeans
from threadpoolctl import threadpool_limits

from workbench import codec, models, train
from workbench.prune import Magnitude, prunable_layers
from workbench.quantize.kmeans import (INITS, KMeans, TrainedKMeans, init_centroids,
                                       kmeans_codebook, lloyd_1d, share_weights)


def weights(n=3000, outliers=(), seed=0):
    """Bell-shaped values like a layer's weights, plus a few far outliers."""
    g = torch.Generator().manual_seed(seed)
    bulk = torch.cat([torch.randn(n, generator=g) * 0.05, torch.randn(n // 15, generator=g) * 0.3])
    return torch.cat([bulk, torch.tensor(outliers, dtype=torch.float32)])


def layer_values(model):
    return {name: m.weight.detach() for name, m in prunable_layers(model)}


# ------------------------------------------------------------------ the clustering

@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("k, outliers", [(2, ()), (5, ()), (16, ()), (16, (2.0, -1.5, 3.0))])
def test_lloyd_agrees_with_sklearn(init, k, outliers):
    """Same start, same Lloyd iterations (empty clusters relocated alike): same centroids."""
    w = weights(outliers=outliers)
    start = init_centroids(w, k, init, seed=3)
    ours = lloyd_1d(w, start)
    with threadpool_limits(1):
        ref = SKLearnKMeans(k, init=start.numpy()[:, None], n_init=1, tol=0, max_iter=300
                            ).fit(w.double().numpy()[:, None])
    assert np.allclose(ours.numpy(), np.sort(ref.cluster_centers_.ravel()), rtol=0, atol=1e-12)


@pytest.mark.parametrize("init", INITS)
def test_centroids_are_the_means_of_their_nearest_weights(init):
    w = weights(outliers=(1.0,)).double()
    codebook, indices = kmeans_codebook(w, 12, init)
    assert len(codebook) == 12 and torch.all(codebook[1:] > codebook[:-1])
    nearest = (w[:, None] - codebook[None]).abs().argmin(1)
    assert torch.equal(indices, nearest)
    for j in range(12):
        assert torch.allclose(codebook[j], w[indices == j].mean(), rtol=0, atol=1e-12)


def test_init_definitions():
    w = weights(outliers=(0.9, -0.7))
    w64 = w.double().numpy()
    linear = init_centroids(w, 7, "linear")
    assert np.allclose(linear.numpy(), np.linspace(w64.min(), w64.max(), 7))
    density = init_centroids(w, 7, "density")    # the CDF cut at 1/14, 3/14, ..., 13/14
    assert np.allclose(density.numpy(), np.quantile(w64, (np.arange(7) + 0.5) / 7))
    levels = (torch.arange(7, dtype=torch.float64) + 0.5) / 7
    assert np.allclose(density.numpy(), torch.quantile(w.double(), levels))
    random = init_centroids(w, 7, "random", seed=5)
    assert len(set(random.tolist())) == 7 and set(random.tolist()) <= set(w64.tolist())
    assert torch.equal(random, init_centroids(w, 7, "random", seed=5))
    assert not torch.equal(random, init_centroids(w, 7, "random", seed=6))
    # fewer distinct values than k: each of them, once
    assert torch.equal(init_centroids(torch.tensor([1.0, 2.0, 2.0]), 4, "linear"),
                       torch.tensor([1.0, 2.0], dtype=torch.float64))


def test_linear_init_covers_the_extremes():
    """Han et al.'s point (fig. 4): linear starts at the extremes, so the few large weights
    keep centroids near them; density spends its centroids where the weights are dense."""
    w = weights(outliers=(0.9, -0.8))
    linear = init_centroids(w, 8, "linear")
    assert linear[0] == w.min() and linear[-1] == w.max()
    density = init_centroids(w, 8, "density")
    assert density[0] > w.min() and density[-1] < w.max()
    error = {}
    for init in ("linear", "density"):
        codebook, indices = kmeans_codebook(w, 8, init)
        error[init] = (codebook[indices] - w).abs()[-2:].max()     # at the two outliers
    assert error["linear"] < error["density"]


# ------------------------------------------------------------------ KMeans on a network

@pytest.mark.parametrize("k", [2, 3, 16, 256])
def test_k_distinct_values_per_layer(k):
    model = untrained("lenet300", seed=1)
    out = KMeans(k=k).apply(model)
    for name, w in layer_values(out).items():
        assert len(torch.unique(w)) == k, name
    x = sample_input(model)
    with torch.no_grad():
        assert torch.equal(codec.decode(codec.encode(out))(x), out(x))


def test_conv_layers_take_their_own_k():
    out = KMeans(k=4, conv_k=32).apply(untrained("lenet5", seed=1))
    counts = {name: len(torch.unique(w)) for name, w in layer_values(out).items()}
    for name, m in prunable_layers(out):
        assert counts[name] == (32 if isinstance(m, torch.nn.Conv2d) else 4)


@pytest.mark.skipif("codebook" not in codec.FORMATS, reason="codec has no codebook format yet")
@pytest.mark.parametrize("k", [3, 16, 100])
def test_bytes_shrink_to_log2_k_bits_per_weight(k):
    model = untrained("lenet300", seed=2)
    out = KMeans(k=k).apply(model)
    header = codec.read_header(codec.encode(out))
    bits = math.ceil(math.log2(k))
    for entry in header["tensors"]:
        if entry["name"].endswith("weight"):
            n = math.prod(entry["shape"])
            assert entry["nbytes"] <= math.ceil(n * bits / 8) + 4 * k + 16, entry
    dense = len(codec.encode(model, formats=("dense",), dtype="float32"))
    weights_total = sum(w.numel() for w in layer_values(model).values())
    assert len(codec.encode(out)) < dense - weights_total * (4 - bits / 8) + 4096


@pytest.mark.parametrize("how", ["mask", "zeros"])
def test_pruned_zeros_stay_zero_and_are_not_clustered(how, mnist_train_small):
    pruned = Magnitude(sparsity=0.8).apply(untrained("lenet300", seed=3))
    if how == "zeros":     # a plain network with exact zeros instead of weight_mask
        pruned = codec.decode(codec.encode(pruned))
    zeros = {name: w == 0 for name, w in layer_values(pruned).items()}
    with train.quiet():
        trained = TrainedKMeans(k=8, epochs=1, lr=1e-3).apply(pruned, mnist_train_small)
    for out in (KMeans(k=8).apply(pruned), trained):
        for name, m in prunable_layers(out):
            assert torch.equal(m.weight == 0, zeros[name]), name
            assert len(torch.unique(m.weight[m.weight != 0])) == 8, name
            assert not m.weight._backward_hooks, name     # nothing left behind by training
    # the clustering saw only the kept weights: the codebook is k-means of those alone
    w = layer_values(pruned)["net.3"]
    codebook, indices = share_weights(w, 8)
    alone, _ = kmeans_codebook(w[w != 0], 8)
    assert codebook[0] == 0 and torch.equal(codebook[1:], alone)
    assert torch.equal(indices == 0, w == 0)


def test_validation():
    assert KMeans(k=16.0).k == 16 and isinstance(KMeans(k=16.0).k, int)   # a float slider
    for bad in (dict(k=1), dict(k=16.5), dict(k="x"), dict(init="kmeans++"), dict(conv_k=1)):
        field = next(iter(bad))
        with pytest.raises(ValueError, match=field):
            KMeans(**bad)
    with pytest.raises(ValueError, match="train_biases"):
        TrainedKMeans(train_biases="yes")
    with pytest.raises(ValueError, match="seed"):        # the training's seed range
        TrainedKMeans(seed=2 ** 40)
    assert KMeans(seed=2 ** 40).seed == 2 ** 40          # k-means' own seed goes further
    with pytest.raises(ValueError, match="needs data"):
        TrainedKMeans().apply(untrained("lenet300"))
    assert KMeans(k=16).tags().bits_per_weight == 4 and TrainedKMeans(k=8).bits_per_weight() == 3
    assert not KMeans().tags().needs_data and TrainedKMeans().tags().needs_data
    assert not TrainedKMeans(epochs=0).tags().needs_data


def test_trained_kmeans_without_epochs_is_kmeans():
    model = untrained("lenet300", seed=5)
    shared, trained = KMeans(k=8).apply(model), TrainedKMeans(k=8, epochs=0).apply(model)
    for (name, a), (_, b) in zip(prunable_layers(shared), prunable_layers(trained)):
        assert torch.equal(a.weight, b.weight), name


# ------------------------------------------------------------------ trained centroids

def small_net(seed=4):
    torch.manual_seed(seed)
    return models.build("lenet300", hidden=(24, 12))


def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    method = TrainedKMeans(k=5)
    shared, _ = method.share(small_net())
    x, y = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0)), \
        torch.arange(16) % 10
    F.cross_entropy(shared(x), y).backward()
    # by hand: the same network with plain leaf weights equal to codebook[indices]
    plain = small_net()
    for (name, m), (_, p) in zip(prunable_layers(shared), prunable_layers(plain)):
        p.weight.data = m.weight.detach().clone()
        p.bias.data = m.bias.detach().clone()
    F.cross_entropy(plain(x), y).backward()
    for (name, m), (_, p) in zip(prunable_layers(shared), prunable_layers(plain)):
        book = m.parametrizations.weight.original
        indices = m.parametrizations.weight[0].indices
        by_hand = torch.zeros(len(book)).index_add_(0, indices.flatten(), p.weight.grad.flatten())
        assert torch.allclose(book.grad, by_hand, rtol=1e-5, atol=1e-7), name
        assert torch.allclose(m.bias.grad, p.bias.grad)


def test_a_training_step_moves_centroids_not_assignments(mnist_train_small):
    method = TrainedKMeans(k=6, epochs=1, lr=1e-3)
    shared, keep_zero = method.share(small_net())
    books = {n: m.parametrizations.weight.original.detach().clone()
             for n, m in prunable_layers(shared)}
    indices = {n: m.parametrizations.weight[0].indices.clone() for n, m in prunable_layers(shared)}
    from workbench.train import Recipe, fit
    fit(shared, mnist_train_small.subset(64, seed=0),
        Recipe(epochs=1, lr=1e-3, batch_size=32, weight_decay=0.0), [keep_zero], progress=False)
    for name, m in prunable_layers(shared):
        book = m.parametrizations.weight.original.detach()
        assert not torch.equal(book, books[name]), name                  # centroids moved
        assert torch.equal(m.parametrizations.weight[0].indices, indices[name])
        assert torch.equal(m.weight, book[indices[name]])                # still shared
    with train.quiet():
        out = method.apply(small_net(), mnist_train_small)
    for name, w in layer_values(out).items():
        assert len(torch.unique(w)) == 6, name
        assert not torch.nn.utils.parametrize.is_parametrized(out.get_submodule(name))


def test_frozen_biases_stay_put(mnist_train_small):
    method = TrainedKMeans(k=4, epochs=1, lr=1e-3, train_biases=False)
    net = small_net()
    with train.quiet():
        out = method.apply(net, mnist_train_small)
    for (name, a), (_, b) in zip(prunable_layers(net), prunable_layers(out)):
        assert torch.equal(a.bias, b.bias), name


def test_half_biases_are_rounded_to_float16_and_stored_in_two_bytes(mnist_train_small):
    model = untrained("lenet5", seed=4)
    with train.quiet():
        full = TrainedKMeans(k=15, epochs=0).apply(model, mnist_train_small)
        half = TrainedKMeans(k=15, epochs=0, half_biases=True).apply(model, mnist_train_small)
    for (name, a), (_, b) in zip(prunable_layers(full), prunable_layers(half)):
        assert torch.equal(a.weight, b.weight), name           # the weights are not touched
        assert torch.equal(b.bias, a.bias.half().float()), name
    entries = {t["name"]: t for t in codec.read_header(codec.encode(half))["tensors"]}
    full_entries = {t["name"]: t for t in codec.read_header(codec.encode(full))["tensors"]}
    for name, m in prunable_layers(half):
        assert entries[f"{name}.bias"]["nbytes"] == 2 * m.bias.numel()
        assert full_entries[f"{name}.bias"]["nbytes"] == 4 * m.bias.numel()
    x = sample_input(model)
    with torch.no_grad():
        assert torch.allclose(half(x), full(x), atol=1e-2)
    assert TrainedKMeans(half_biases=True).settings()["half_biases"] is True
    with pytest.raises(ValueError, match="half_biases"):
        TrainedKMeans(half_biases="yes")


def test_a_bias_beyond_float16_is_named_not_made_infinite():
    from workbench.quantize.kmeans import round_biases_to_half
    model = untrained("lenet300", seed=5)
    with torch.no_grad():
        model.net[3].bias[7] = 1e6
    with pytest.raises(ValueError, match=r"net\.3.*1e\+06.*65504"):
        round_biases_to_half(model)
