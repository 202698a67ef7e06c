"""Shared fixtures: where the official data files are, small subsets, broken data folders.

The data files are never copied into the repository: they are read from ``$WORKBENCH_DATA``
(or the shared folder beside the checkout), and the tests that need broken files make them in
``tmp_path``.
"""
from __future__ import annotations

import gzip
import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest
import torch

from workbench import data, models

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def workbench_data_env():
    """Point WORKBENCH_DATA at the shared official files when it is not set already."""
    if os.environ.get("WORKBENCH_DATA") or not SHARED_DATA.is_dir():
        yield os.environ.get("WORKBENCH_DATA")
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_DATA", str(SHARED_DATA))
        data.mnist.cache_clear()
        data.cifar10.cache_clear()
        yield str(SHARED_DATA)
    data.mnist.cache_clear()
    data.cifar10.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Run the suite on one intra-op thread.

    On two cores that are busy (a zoo training beside the tests), two OpenMP threads wait on
    each other: a ResNet-20 forward pass of 4 images takes 0.8 s instead of 0.01 s. The tests
    check results, not speed, so one thread keeps them fast wherever they run.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mnist_test():
    return data.mnist("test")


@pytest.fixture(scope="session")
def mnist_test_small(mnist_test):
    """A stratified subset of 500 MNIST test images (seed 0)."""
    return mnist_test.subset(500, seed=0)


@pytest.fixture(scope="session")
def lenet300_bases(mnist_test):
    """The survey's base reports for cells on LeNet-300-100: its report on 200 test images
    (the ``test_images`` the survey tests pass), keyed by zoo name."""
    from workbench import measure, zoo
    if "lenet300" not in zoo.manifest():
        pytest.skip("no lenet300 checkpoint")
    return {"lenet300": measure.report(zoo.pretrained("lenet300"), mnist_test.subset(200, seed=0),
                                       "lenet300", latency=False)}


@pytest.fixture(scope="session")
def mnist_train_small():
    """A stratified subset of 512 MNIST training images (seed 0)."""
    return data.mnist("train").subset(512, seed=0)


def official_file(subdir: str, name: str) -> Path:
    """The verified official file (from the normal search path), to copy from."""
    return data.locate(subdir, name, {**data.MNIST_FILES, **data.CIFAR_FILES}[name],
                       download=False)


@pytest.fixture(scope="session")
def official_mnist_files() -> dict[str, Path]:
    """Paths of the verified official MNIST files (found before any test changes the env)."""
    return {name: official_file("mnist", name) for name in data.MNIST_FILES}


@pytest.fixture
def isolated_data(tmp_path, monkeypatch, official_mnist_files):
    """An empty data world: WORKBENCH_DATA, ./data and the user cache all live in tmp_path.

    Returns the folder WORKBENCH_DATA points to. The dataset caches are cleared before and
    after, so neither this test nor a later one sees a cached set from another world.
    """
    root = tmp_path / "wbdata"
    root.mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.setenv("WORKBENCH_DATA", str(root))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path / "work")
    data.mnist.cache_clear()
    data.cifar10.cache_clear()
    yield root
    data.mnist.cache_clear()
    data.cifar10.cache_clear()


@pytest.fixture
def corrupt_mnist(isolated_data, official_mnist_files):
    """Factory: copy the MNIST test files into the isolated folder and spoil one of them.

    ``corrupt_mnist(name, how)`` with ``how`` in {"flip", "truncate"} returns the spoiled path.
    """
    official = official_mnist_files

    def make(name: str, how: str) -> Path:
        folder = isolated_data / "mnist"
        folder.mkdir(exist_ok=True)
        for other in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
            shutil.copyfile(official[other], folder / other)
        path = folder / name
        raw = bytearray(path.read_bytes())
        if how == "flip":
            raw[len(raw) // 2] ^= 0xFF
        elif how == "truncate":
            raw = raw[: len(raw) // 2]
        else:
            raise ValueError(how)
        path.write_bytes(bytes(raw))
        return path

    return make


def write_gzip(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(payload)
    return path


def untrained(name: str, seed: int = 0, randomize_bn: bool = True) -> torch.nn.Module:
    """A freshly built zoo network in eval mode; BN running stats randomized (seeded)."""
    torch.manual_seed(seed)
    model = models.build(name)
    if randomize_bn:
        g = torch.Generator().manual_seed(seed + 1)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.num_batches_tracked.fill_(7)
    return model.eval()


def sample_input(model: torch.nn.Module, n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *model.input_shape, generator=g)


@pytest.fixture(scope="session")
def postgres_url():
    """URL of an empty database on a PostgreSQL server started for this test session.

    ``postgresql+psycopg2://postgres@127.0.0.1:PORT/workbench``: SQLAlchemy and
    ``optuna.storages.RDBStorage`` open it as is (``postgres_server.libpq_dsn`` gives the form
    ``psycopg2.connect`` takes). Each pytest-xdist worker starts its own server
    (own temporary folder and port), stopped and deleted when the session ends; tests sharing a
    worker share the database, so give each study its own name. Skips when PostgreSQL or
    psycopg2 is not installed; fails, with the server log, when it is installed but broken.
    """
    from postgres_server import missing_reason, running_server

    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with running_server() as server:
        yield server.url


# ------------------------------------------------------------------ forged model files

def with_crc(body: bytes) -> bytes:
    """``body`` with the CRC32 a model file ends with: what a buggy encoder would write."""
    return body + struct.pack("<I", zlib.crc32(body))


def as_version_1(blob: bytes) -> bytes:
    """The version 1 model file of the same content as the version 2 ``blob``: its header
    inflated back to plain JSON."""
    assert blob[4] == 2
    (length,) = struct.unpack_from("<I", blob, 5)
    text = zlib.decompress(blob[9:9 + length])
    return with_crc(b"WBNC" + bytes([1]) + struct.pack("<I", len(text)) + text
                    + blob[9 + length:-4])
