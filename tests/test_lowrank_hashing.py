"""HashedNets and FunHashNN: the hash against xxHash32, its uniformity and determinism, the
per-bucket gradient against autograd of the dense virtual matrix, the least-squares bucket
fit, and a file that holds only the buckets."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import sample_input, untrained

from workbench import codec, train, zoo
from workbench.lowrank.hashing import (
    FunHash,
    FunHashLinear,
    HashedLinear,
    HashedNets,
    bucket_average,
    hash_maps,
    xxh32_pair,
)
from workbench.measure import count_params

# xxhash.xxh32_intdigest(struct.pack("<II", i, j), seed) from the reference library
# (python-xxhash 4.1.0, libxxhash); XXH32 of the empty input with seed 0 is 0x02CC5D05.
XXH32_VECTORS = [(0, 0, 0, 3736311059), (1, 2, 3, 3599461459), (783, 999, 1691, 2851372669),
                 (12345, 67890, 2**31 - 1, 3709046002)]


def test_hash_is_xxh32_of_the_index_pair():
    i, j, seed, expected = zip(*XXH32_VECTORS)
    for k in range(len(i)):
        got = xxh32_pair(torch.tensor([i[k]]), torch.tensor([j[k]]), seed[k])
        assert int(got) == expected[k]


def test_hash_matches_the_xxhash_library_when_installed():
    xxhash = pytest.importorskip("xxhash")
    import struct
    g = torch.Generator().manual_seed(0)
    i, j = (torch.randint(0, 2**32, (500,), generator=g, dtype=torch.int64) for _ in range(2))
    for seed in (0, 7, 2**32 - 1):
        ref = [xxhash.xxh32_intdigest(struct.pack("<II", a, b), seed)
               for a, b in zip(i.tolist(), j.tolist())]
        assert xxh32_pair(i, j, seed).tolist() == ref


def test_bucket_loads_are_uniform_and_signs_balanced():
    rows, cols, buckets = 1000, 784, 12250          # the 1/64 hidden layer of the bench
    index, sign = hash_maps(rows, cols, buckets, seed=5)
    loads = torch.bincount(index.flatten(), minlength=buckets).double()
    mean = rows * cols / buckets
    chi2 = ((loads - mean) ** 2 / mean).sum()
    dof = buckets - 1
    assert abs(chi2 - dof) < 5 * (2 * dof) ** 0.5          # chi-square test against uniform
    assert abs(sign.mean()) < 5 / (rows * cols) ** 0.5     # +1 and -1 equally often
    # the sign is not a function of the bucket: within buckets both signs occur
    same = torch.zeros(buckets).index_add_(0, index.flatten(), sign.flatten()).abs()
    assert same.mean() < 2 * mean ** 0.5


def test_hash_maps_are_deterministic_and_seeded():
    a = hash_maps(40, 30, 97, seed=3)
    b = hash_maps(40, 30, 97, seed=3)
    c = hash_maps(40, 30, 97, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert (a[0] != c[0]).float().mean() > 0.9


def test_bucket_gradient_is_the_signed_sum_of_its_entries():
    torch.manual_seed(0)
    layer = HashedLinear(30, 20, buckets=50, seed=1).double()
    torch.nn.init.normal_(layer.values)
    x = torch.randn(8, 30, dtype=torch.float64)
    target = torch.randn(8, 20, dtype=torch.float64)
    F.mse_loss(layer(x), target).backward()
    # oracle: autograd through the dense virtual matrix, then summed per bucket by hand
    dense = layer.weight_matrix().detach().requires_grad_()
    F.mse_loss(F.linear(x, dense, layer.bias.detach()), target).backward()
    expected = torch.zeros(50, dtype=torch.float64)
    for (i, j), k in zip(torch.cartesian_prod(torch.arange(20), torch.arange(30)).tolist(),
                         layer.index.flatten().tolist()):
        expected[k] += layer.sign[i, j] * dense.grad[i, j]
    assert torch.allclose(layer.values.grad, expected, atol=1e-12)


def test_bucket_average_is_the_least_squares_fit_of_a_trained_layer():
    w = zoo.pretrained("lenet300").net[5].weight.detach().double()     # 10 x 100, trained
    index, sign = hash_maps(10, 100, 64, seed=2)
    values = bucket_average(w, index, sign, 64)
    design = torch.zeros(1000, 64, dtype=torch.float64)
    design[torch.arange(1000), index.flatten()] = sign.flatten().double()
    best = torch.linalg.lstsq(design, w.flatten()[:, None]).solution.flatten()
    assert torch.allclose(values, best, atol=1e-10)


def test_file_holds_only_buckets_and_biases():
    base = zoo.pretrained("lenet300")
    out = HashedNets(compression=1 / 8, init="average", epochs=0).apply(base)
    assert all(not any(k.endswith(s) for s in ("index", "sign")) for k in out.state_dict())
    buckets = sum(m.values.numel() for m in out.modules() if isinstance(m, HashedLinear))
    assert buckets == sum(round(m.in_features * m.out_features / 8)
                          for m in base.modules() if isinstance(m, torch.nn.Linear))
    blob = codec.encode(out)
    framing = codec.read_header(blob)["_payload_start"] + 4      # prefix, header, CRC32
    stored = count_params(out)[0] * 4
    assert stored <= len(blob) <= stored + framing               # 4 bytes a value, nothing else
    again = codec.decode(blob)
    x = sample_input(out)
    with torch.no_grad():
        assert torch.equal(again(x), out(x))


def test_average_init_tracks_the_dense_network_and_degrades_with_compression(
        mnist_test_small):
    base = zoo.pretrained("lenet300")
    acc = {c: train.evaluate(HashedNets(compression=c, init="average", epochs=0).apply(base),
                             mnist_test_small) for c in (1.0, 1 / 64)}
    assert acc[1.0] > 0.5 > acc[1 / 64]     # collisions alone at 1.0; far fewer buckets at 1/64


def test_training_from_scratch_learns(mnist_train_small, mnist_test_small):
    with train.quiet():
        out = HashedNets(compression=1 / 8, epochs=3, batch_size=64).apply(
            untrained("lenet300"), mnist_train_small)
    assert train.evaluate(out, mnist_test_small) > 0.7


def test_funhash_with_one_hash_and_unit_combination_is_hashednets():
    fun = FunHashLinear(30, 20, buckets=50, hashes=1, hidden=0, seed=3)
    hashed = HashedLinear(30, 20, buckets=50, seed=3)
    with torch.no_grad():
        torch.nn.init.normal_(hashed.values)
        fun.values.copy_(hashed.values)
        fun.g_in.fill_(1 / fun.g_scale)
    assert torch.allclose(fun.weight_matrix(), hashed.weight_matrix(), atol=1e-6)


def test_funhash_lookups_and_gradients_against_autograd():
    layer = FunHashLinear(12, 9, buckets=20, hashes=3, hidden=4, seed=6).double()
    torch.manual_seed(0)
    for p in layer.parameters():
        torch.nn.init.normal_(p)
    for k in range(3):     # hash function k: seed + 2k, its sign: seed + 2k + 1
        index, sign = hash_maps(9, 12, 20, seed=6 + 2 * k)
        assert torch.equal(layer.looked_up()[k], sign.double() * layer.values[index])
    names = ["values", "g_in", "g_in_bias", "g_out", "bias"]
    x = torch.randn(5, 12, dtype=torch.float64)

    def output(*tensors):       # the layer's output as a function of its parameters
        return torch.func.functional_call(layer, dict(zip(names, tensors)), (x,))

    inputs = [getattr(layer, n).detach().clone().requires_grad_() for n in names]
    assert torch.autograd.gradcheck(output, inputs)         # autograd against finite differences


def test_funhash_stores_as_much_as_hashednets_and_round_trips(mnist_train_small):
    base = untrained("lenet300")
    with train.quiet():
        fun = FunHash(compression=1 / 16, epochs=1).apply(base, mnist_train_small)
        hashed = HashedNets(compression=1 / 16, epochs=1).apply(base, mnist_train_small)
    assert count_params(fun)[0] == count_params(hashed)[0] < count_params(base)[0] / 14
    x = sample_input(fun)
    with torch.no_grad():
        assert torch.equal(codec.decode(codec.encode(fun))(x), fun(x))


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="epochs"):
        HashedNets(init="scratch", epochs=0)
    with pytest.raises(ValueError, match="compression"):
        HashedNets(compression=0.0)
    with pytest.raises(ValueError, match="layers"):
        HashedNets(layers=("net.9",), epochs=0, init="average").apply(untrained("lenet300"))
    with pytest.raises(ValueError, match="compression"):
        FunHash(compression=1e-4, epochs=1).apply(untrained("lenet300"), None)
    only = HashedNets(layers=("net.1",), init="average", epochs=0).apply(untrained("lenet300"))
    assert isinstance(only.net[1], HashedLinear) and isinstance(only.net[3], torch.nn.Linear)
