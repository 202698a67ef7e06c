"""workbench.data against the published facts of MNIST and CIFAR-10."""
from __future__ import annotations

from pathlib import Path
import itertools

import numpy as np
import pytest
import torch
from conftest import write_gzip

from workbench import data
from workbench.data import DataError

# Published class histograms (LeCun et al.'s MNIST page; Krizhevsky's CIFAR-10 page).
MNIST_TRAIN_HIST = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_HIST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
CIFAR_TRAIN_HIST = [5000] * 10
CIFAR_TEST_HIST = [1000] * 10


def histogram(labels: torch.Tensor) -> list[int]:
    return torch.bincount(labels, minlength=10).tolist()


# ---------------------------------------------------------------- official sets

@pytest.mark.parametrize("loader, split, n, shape, hist", [
    (data.mnist, "train", 60000, (1, 28, 28), MNIST_TRAIN_HIST),
    (data.mnist, "test", 10000, (1, 28, 28), MNIST_TEST_HIST),
    (data.cifar10, "train", 50000, (3, 32, 32), CIFAR_TRAIN_HIST),
    (data.cifar10, "test", 10000, (3, 32, 32), CIFAR_TEST_HIST),
], ids=["mnist-train", "mnist-test", "cifar-train", "cifar-test"])
def test_official_sizes_and_histograms(loader, split, n, shape, hist):
    ds = loader(split)
    assert len(ds) == n and ds.images.shape == (n, *shape) and ds.shape == shape
    assert ds.images.dtype == torch.uint8          # kept as bytes, normalized per batch
    assert ds.labels.dtype == torch.int64 and ds.labels.shape == (n,)
    assert histogram(ds.labels) == hist
    assert ds.split == split


def test_load_by_name_is_the_same_object_and_rejects_unknown():
    assert data.load("mnist", "test") is data.mnist("test")
    with pytest.raises(ValueError, match="imagenet"):
        data.load("imagenet")


@pytest.mark.parametrize("loader", [data.mnist, data.cifar10])
def test_unknown_split_raises(loader):
    with pytest.raises(ValueError, match="valid"):
        loader("valid")


def test_read_idx_parses_official_file(official_mnist_files):
    images = data.read_idx(official_mnist_files["t10k-images-idx3-ubyte.gz"])
    labels = data.read_idx(official_mnist_files["t10k-labels-idx1-ubyte.gz"])
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == MNIST_TEST_HIST
    assert torch.equal(data.mnist("test").images[:, 0], torch.from_numpy(images.copy()))


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_normalization_gives_zero_mean_unit_std(name):
    ds = data.load(name, "train").subset(2000, seed=1)
    x, y = next(ds.loader(batch_size=2000, shuffle=True))
    assert x.dtype == torch.float32 and x.shape == (2000, *ds.shape)
    per_channel = x.transpose(0, 1).reshape(x.shape[1], -1)
    assert per_channel.mean(1).abs().max() < 0.03
    assert (per_channel.std(1) - 1).abs().max() < 0.03
    # Oracle: the same as normalizing the bytes by hand.
    mean, std = data.STATS[name]
    manual = (ds.images.float() / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / \
        torch.tensor(std).view(1, -1, 1, 1)
    assert torch.allclose(ds.tensors()[0], manual)


def test_loader_covers_every_example_once(mnist_test_small):
    xs, ys = zip(*mnist_test_small.loader(batch_size=96, shuffle=True, seed=3))
    assert [len(y) for y in ys] == [96] * 5 + [20]
    assert mnist_test_small.batches(96) == 6
    assert sorted(torch.cat(ys).tolist()) == sorted(mnist_test_small.labels.tolist())
    assert not torch.equal(torch.cat(ys), mnist_test_small.labels)  # shuffled


# ---------------------------------------------------------------- subset

@pytest.mark.parametrize("n", [1, 7, 500, 1234])
def test_subset_is_stratified(mnist_test, n):
    sub = mnist_test.subset(n, seed=0)
    assert len(sub) == n and sub.images.dtype == torch.uint8
    counts = np.array(histogram(sub.labels))
    expected = np.array(MNIST_TEST_HIST) * n / len(mnist_test)
    assert np.all(np.abs(counts - expected) < 1)
    # Every picked example is a real (image, label) pair of the full set.
    flat = mnist_test.images.view(len(mnist_test), -1)
    for img, label in zip(sub.images[:10], sub.labels[:10]):
        matches = (flat == img.view(1, -1)).all(1).nonzero().flatten()
        assert len(matches) >= 1 and label in mnist_test.labels[matches]


def test_subset_deterministic_and_seed_dependent(mnist_test):
    a, b = mnist_test.subset(300, seed=5), mnist_test.subset(300, seed=5)
    c = mnist_test.subset(300, seed=6)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


@pytest.mark.parametrize("n", [0, -1, 10001])
def test_subset_bad_n_raises(mnist_test, n):
    with pytest.raises(ValueError, match=f"n={n}"):
        mnist_test.subset(n)


# ---------------------------------------------------------------- augmentation

def test_random_crop_flip_takes_pixels_from_padded_image():
    pad = 4
    g = torch.Generator().manual_seed(0)
    # Random nonzero bytes: a crop then matches one (offset, flip) only, and the zero padding
    # is told apart from the image.
    images = torch.randint(1, 256, (24, 3, 8, 8), dtype=torch.uint8, generator=g)
    out = data.random_crop_flip(images, torch.Generator().manual_seed(1), pad=pad)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    seen_offsets, seen_flips = set(), set()
    for i in range(len(images)):
        found = [(dy, dx, flip) for dy, dx, flip in
                 itertools.product(range(2 * pad + 1), range(2 * pad + 1), (False, True))
                 if torch.equal(out[i], (lambda c: c.flip(-1) if flip else c)(
                     padded[i, :, dy:dy + 8, dx:dx + 8]))]
        assert found, f"image {i} is not a (flipped) crop of its padded image"
        seen_offsets.add(found[0][:2])
        seen_flips.add(found[0][2])
    assert len(seen_offsets) > 5 and seen_flips == {False, True}


def test_random_crop_flip_on_cifar_loader_keeps_labels():
    ds = data.cifar10("test").subset(64, seed=0)
    (xa, ya), = ds.loader(batch_size=64, augment=True, seed=0)
    (xb, yb), = ds.loader(batch_size=64, augment=True, seed=0)
    (xp, yp), = ds.loader(batch_size=64, augment=False)
    assert xa.shape == xp.shape and torch.equal(ya, yp)
    assert torch.equal(xa, xb)                    # same seed, same augmentation
    assert not torch.equal(xa, xp)


def test_mnist_loader_augments_by_shifts_of_two_pixels_without_flips(mnist_test):
    # A flipped digit is another symbol or none: grey digits are only shifted.
    ds = mnist_test.subset(64, seed=0)
    (xa, ya), = ds.loader(batch_size=64, augment=True, seed=0)
    (xp, yp), = ds.loader(batch_size=64, augment=False)
    assert torch.equal(ya, yp) and not torch.equal(xa, xp)
    pad = 2
    padded = torch.nn.functional.pad(xp, (pad, pad, pad, pad),
                                     value=float(xp.min()))   # the normalized zero pixel
    shifts = set()
    for i in range(len(ds)):
        found = [(dy, dx) for dy, dx in itertools.product(range(2 * pad + 1), repeat=2)
                 if torch.equal(xa[i], padded[i, :, dy:dy + 28, dx:dx + 28])]
        assert found, f"image {i} is not a shifted copy of itself (a flip, or a shift > {pad})"
        shifts.add(found[0])
    assert len(shifts) > 5
    assert any(pad * 2 in s or 0 in s for s in shifts)   # some digit moved the full 2 pixels


# ---------------------------------------------------------------- broken and missing files

@pytest.mark.parametrize("how", ["flip", "truncate"])
@pytest.mark.parametrize("name", ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"])
def test_corrupt_file_raises_data_error_naming_it(corrupt_mnist, name, how):
    path = corrupt_mnist(name, how)
    with pytest.raises(DataError) as err:
        data.mnist("test")
    assert str(path) in str(err.value)
    assert "md5" in str(err.value)


def test_missing_file_without_download_says_where_to_put_it(isolated_data, monkeypatch):
    def no_network(subdir):
        raise OSError("network unreachable (test)")
    monkeypatch.setattr(data, "_download", no_network)
    with pytest.raises(DataError) as err:
        data.mnist("test")
    message = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in message
    assert "network unreachable (test)" in message
    assert str(isolated_data / "mnist") in message     # the folder to put it in
    assert "WORKBENCH_DATA" in message
    assert not (isolated_data / "mnist").exists()      # nothing half-written


def test_missing_file_with_download_disabled(isolated_data):
    with pytest.raises(DataError, match="download disabled"):
        data.locate("mnist", "t10k-labels-idx1-ubyte.gz",
                    data.MNIST_FILES["t10k-labels-idx1-ubyte.gz"], download=False)


def test_read_idx_rejects_non_idx_gzip(tmp_path):
    path = write_gzip(tmp_path / "notes.gz", b"hello, this is not an IDX file\n" * 10)
    with pytest.raises(DataError, match="not an IDX") as err:
        data.read_idx(path)
    assert str(path) in str(err.value)


def test_read_idx_rejects_size_mismatch(tmp_path):
    # Valid magic (unsigned bytes, 2 dims) saying 3x4 = 12 values, but holding 10.
    header = bytes([0, 0, 8, 2]) + (3).to_bytes(4, "big") + (4).to_bytes(4, "big")
    path = write_gzip(tmp_path / "short.gz", header + bytes(10))
    with pytest.raises(DataError, match="10 bytes"):
        data.read_idx(path)
    ok = write_gzip(tmp_path / "ok.gz", header + bytes(range(12)))
    assert data.read_idx(ok).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_search_order_env_then_cwd_then_checkout_then_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    dirs = data.search_dirs()
    checkout = Path(data.__file__).resolve().parent.parent / "data"
    assert dirs == [tmp_path / "env", tmp_path / "data", checkout, tmp_path / "cache" / "workbench"]
