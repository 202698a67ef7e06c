"""Vector quantization (workbench.quantize.product): PQ / RQ against scikit-learn's k-means,
Q-CNN's output-error correction and look-up-table inference against the dense product, the PQ
regularizer's gradient against its hand-derived form, and the exact round trip of format "pq".
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans

from workbench import codec
from workbench.models import build
from workbench.quantize import product as P
from workbench.quantize import product_layer, product_tensors


def matrix(out=48, n=30, seed=0):
    return torch.randn(out, n, generator=torch.Generator().manual_seed(seed)) * 0.1


def test_subspace_kmeans_agrees_with_sklearn():
    W = matrix(40, 12)
    books, codes = P.pq_codebooks(W, subvector=3, k=5, seed=3)
    assert books.shape == (4, 5, 3) and codes.shape == (40, 4)
    for m in range(4):
        km = KMeans(5, n_init=1, random_state=3).fit(W[:, 3 * m:3 * m + 3].double().numpy())
        np.testing.assert_allclose(books[m].numpy(), km.cluster_centers_, rtol=1e-6, atol=1e-7)
        assert (codes[:, m].numpy() == km.labels_).all()
    # The codes pick each sub-vector's nearest codeword (a Lloyd fixed point).
    assert torch.equal(P.pq_assign(W, books), codes)


def test_subvector_one_is_scalar_kmeans_per_column():
    W = matrix(50, 6, seed=1)
    books, codes = P.pq_codebooks(W, subvector=1, k=4, seed=0)
    for m in range(6):
        km = KMeans(4, n_init=1, random_state=0).fit(W[:, m:m + 1].double().numpy())
        np.testing.assert_allclose(books[m, :, 0].numpy(), km.cluster_centers_[:, 0], atol=1e-7)
        recon = km.cluster_centers_[km.labels_, 0]
        np.testing.assert_allclose(P.pq_reconstruct(books, codes)[:, m].numpy(), recon, atol=1e-7)


def test_padding_and_small_layers():
    """A width not divisible by the sub-vector is zero-padded; k above the rows is capped."""
    W = matrix(10, 7, seed=2)
    books, codes = P.pq_codebooks(W, subvector=3, k=16, seed=0)
    assert books.shape == (3, 10, 3)                      # K = min(k, out) = 10: exact
    assert torch.allclose(P.pq_reconstruct(books, codes, 7), W, atol=1e-7)


def test_error_falls_with_k_and_with_rq_stages():
    W = matrix(128, 32, seed=4)
    errors = [(P.pq_reconstruct(*P.pq_codebooks(W, 4, k, 0)) - W).norm() for k in (2, 8, 32)]
    assert errors[0] > errors[1] > errors[2]
    rq = [(P.pq_weight(*P.rq_stages(W, 8, 8, s, 0), W.shape) - W).norm() for s in (1, 2, 3, 4)]
    assert all(a > b for a, b in zip(rq, rq[1:]))
    # One RQ stage is plain PQ.
    assert torch.allclose(rq[0], (P.pq_reconstruct(*P.pq_codebooks(W, 8, 8, 0)) - W).norm())


def correlated_inputs(n, dim, seed):
    """Inputs on a few directions (as real activations are), so the output error and the
    weight error differ."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(4, dim, generator=torch.Generator().manual_seed(99))
    return torch.randn(n, 4, generator=g) @ basis + 0.05 * torch.randn(n, dim, generator=g)


def test_qcnn_output_error_below_plain_pq_on_held_out_inputs():
    W = matrix(64, 24, seed=5)
    X, X_test = correlated_inputs(2000, 24, 0), correlated_inputs(1000, 24, 1)
    books, codes = P.pq_codebooks(W, 4, 8, 0)
    refined, new_codes = P.qcnn_refine(X, X @ W.t(), books, codes, sweeps=3)

    def out_error(b, c, inputs):
        return (inputs @ W.t() - inputs @ P.pq_reconstruct(b, c).t()).norm() ** 2

    assert out_error(refined, new_codes, X) < 0.8 * out_error(books, codes, X)
    assert out_error(refined, new_codes, X_test) < 0.8 * out_error(books, codes, X_test)


def lut_by_loops(x, books, codes):
    """Brute force: every multiplication and addition done and counted one by one."""
    M, K, d = books.shape
    xs = P.subspaces(x, d)
    mult = add = 0
    table = torch.zeros(x.shape[0], M, K, dtype=torch.float64)
    for i in range(x.shape[0]):
        for m in range(M):
            for k in range(K):
                acc = xs[m, i, 0].item() * books[m, k, 0].item()
                mult += 1
                for j in range(1, d):
                    acc += xs[m, i, j].item() * books[m, k, j].item()
                    mult, add = mult + 1, add + 1
                table[i, m, k] = acc
    y = torch.zeros(x.shape[0], codes.shape[0], dtype=torch.float64)
    for i in range(x.shape[0]):
        for t in range(codes.shape[0]):
            acc = table[i, 0, codes[t, 0]]
            for m in range(1, M):
                acc, add = acc + table[i, m, codes[t, m]], add + 1
            y[i, t] = acc
    return y, mult, add


def test_lut_inference_equals_dense_product_and_counts_match():
    W, x = matrix(6, 10, seed=6), matrix(3, 10, seed=7)
    books, codes = P.pq_codebooks(W, 4, 3, 0)
    counts = {}
    y = P.lut_linear(x, books, codes, counts)
    dense = x @ P.pq_reconstruct(books, codes, 10).t()
    assert torch.allclose(y, dense, atol=1e-6)
    y_loops, mult, add = lut_by_loops(x.double(), books.double(), codes)
    assert torch.allclose(y.double(), y_loops, atol=1e-6)
    formula = P.lut_ops(batch=3, out=6, n=10, subvector=4, k=3)
    assert counts == {"mult": mult, "add": add} == {"mult": formula["mult"], "add": formula["add"]}


def test_lut_forward_on_conv_and_linear_layers():
    torch.manual_seed(0)
    model = build("lenet5", channels=(4, 8), hidden=32)
    quantized = P.PQ(subvector=5, k=8).apply(model)
    x = torch.randn(2, 1, 28, 28)
    conv, fc = quantized.features[2], quantized.classifier[1]
    h = F.max_pool2d(quantized.features[0](x), 2)
    counts = {}
    assert torch.allclose(P.lut_forward(conv, h, counts), conv(h), atol=1e-5)
    # 2 images x 8x8 positions, 20 sub-spaces x 8 codewords (K = min(8, 8 rows)) x 5 products.
    assert counts["mult"] == 2 * 64 * 20 * 8 * 5
    z = torch.randn(2, 128)
    assert torch.allclose(P.lut_forward(fc, z), fc(z), atol=1e-5)
    # The whole network, layer by layer: counted operations are the formula's.
    rows = {r["layer"]: r for r in P.lut_op_table(quantized, x)}
    assert rows["features.2"]["mult"] == P.lut_ops(2 * 64, 8, 100, 5, 8)["mult"]
    assert rows["classifier.1"]["add"] == P.lut_ops(2, 32, 128, 5, 8)["add"]
    assert rows["classifier.1"]["dense_mult"] == 2 * 32 * 128
    assert max(r["max_abs_diff"] for r in rows.values()) < 1e-4
    assert not any(m._forward_hooks for m in quantized.modules())       # hooks removed


def test_penalty_gradient_is_its_hand_derived_form():
    W = matrix(20, 9, seed=8).requires_grad_(True)
    books = P.pq_codebooks(W.detach() + 0.01, 3, 4, 0)[0]
    P.pq_penalty(W, books).backward()
    # Hand-derived: d/dW ||W - Q(W)||^2 = 2 (W - Q(W)), Q the nearest codeword, by brute force.
    nearest = torch.zeros(20, 9)
    for t in range(20):
        for m in range(3):
            sub = W[t, 3 * m:3 * m + 3].detach()
            k = min(range(4), key=lambda k: ((sub - books[m, k]) ** 2).sum().item())
            nearest[t, 3 * m:3 * m + 3] = books[m, k]
    assert torch.allclose(W.grad, 2 * (W.detach() - nearest), atol=1e-6)


def test_lloyd_update_moves_codewords_to_their_means():
    W = matrix(30, 4, seed=9)
    books = P.pq_codebooks(W, 2, 3, 0)[0] + 0.05
    new, codes = P.lloyd_update(W, books), P.pq_assign(W, books)
    for m in range(2):
        for k in range(3):
            members = W[codes[:, m] == k, 2 * m:2 * m + 2]
            expected = members.mean(0) if len(members) else books[m, k]
            assert torch.allclose(new[m, k], expected, atol=1e-6)


@pytest.mark.parametrize("shape, subvector, k, stages", [
    ((20, 6, 5, 5), 4, 16, 1), ((30, 7), 3, 5, 2), ((10, 100), 100, 3, 3)])
def test_encoder_round_trip_is_exact(shape, subvector, k, stages):
    W = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    books, codes = P.rq_stages(W.reshape(shape[0], -1), subvector, k, stages, 0)
    weight = P.pq_weight(books, codes, shape)
    hint = P.ProductQuantized(codes, books, shape).codec_hint()
    payload, meta = P.encode_pq(weight, None, hint)
    assert torch.equal(P.decode_pq(payload, list(shape), "float32", meta), weight)
    n = int(np.prod(shape[1:]))
    assert len(payload) == P.pq_bytes(shape[0], n, subvector, k, stages)
    with pytest.raises(ValueError):             # a tensor the codes do not give is refused
        P.encode_pq(weight + 1e-3, None, hint)


@pytest.mark.parametrize("codebook_dtype, width", [("float32", 4), ("float16", 2)])
def test_model_file_uses_format_pq_and_decodes_to_the_same_outputs(codebook_dtype, width):
    torch.manual_seed(0)
    base = build("lenet300", hidden=(64, 32))
    quantized = P.RQ(subvector=8, k=8, stages=2, codebook_dtype=codebook_dtype).apply(base)
    blob = codec.encode(quantized)
    formats = {t["name"]: t["format"] for t in codec.read_header(blob)["tensors"]}
    assert formats["net.1.weight"] == formats["net.3.weight"] == "pq"
    entries = {t["name"]: t for t in codec.read_header(blob)["tensors"]}
    assert entries["net.1.weight"]["nbytes"] == P.pq_bytes(64, 784, 8, 8, 2, width)
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(codec.decode(blob)(x), quantized(x))


def test_bad_hyperparameters_are_refused_by_name():
    for cls, field, value in [(P.PQ, "subvector", 0), (P.PQ, "k", 2.5), (P.RQ, "stages", 0),
                              (P.QCNN, "correction", "none"), (P.PQReg, "strength", -1.0),
                              (P.PQ, "codebook_dtype", "int8"), (P.QCNN, "samples", "x"),
                              (P.PQReg, "epochs", 1.5), (P.PQReg, "lr", 0.0)]:
        with pytest.raises(ValueError, match=field):
            cls(**{field: value})


def test_tags_give_code_bits_and_data_needs():
    assert P.PQ(subvector=4, k=16).tags().bits_per_weight == 1.0
    assert P.RQ(subvector=4, k=16, stages=3).bits_per_weight() == 3.0
    assert not P.PQ().tags().needs_data and not P.RQ().tags().needs_data
    assert P.QCNN().tags().needs_data and P.QCNN(sweeps=0).tags().needs_data   # samples inputs
    assert P.PQReg().tags().needs_data and not P.PQReg(epochs=0).tags().needs_data
    with pytest.raises(ValueError, match="needs data"):
        P.QCNN().apply(build("lenet300"))


def test_supports_is_decided_by_the_layers():
    """Any network with Conv2d / Linear layers (the cost of many sub-spaces is the user's to
    choose); a network without any is refused by name of what is missing."""
    nets = {"mlp": torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)),
            "conv_bn": torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)),
            "vgg_small": build("vgg_small")}
    none = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.ReLU())
    for cls in (P.PQ, P.RQ, P.QCNN, P.PQReg):
        assert all(cls().supports(net) for net in nets.values()), cls
        assert not cls().supports(none)
    with pytest.raises(ValueError, match="Conv2d or Linear"):
        P.PQ().apply(none)


def test_pq_on_a_cifar_network_round_trips_through_the_file():
    torch.manual_seed(0)
    base = build("resnet20").eval()
    quantized = P.PQ(subvector=25, k=4).apply(base)
    x = torch.randn(2, 3, 32, 32)
    blob = codec.encode(quantized)
    assert len(blob) < len(codec.encode(base)) / 4
    with torch.no_grad():
        assert torch.equal(codec.decode(blob)(x), quantized(x))


def test_split_modules_keep_every_name_importable_from_product():
    for module in (product_tensors, product_layer):
        for name in dir(module):
            obj = getattr(module, name)
            if callable(obj) and getattr(obj, "__module__", None) == module.__name__:
                assert getattr(P, name) is obj, name
