"""MNIST and CIFAR-10 read from their official files.

The files are looked for in ``$WORKBENCH_DATA``, then ``./data``, then the ``data/`` folder of
the workbench checkout, then the user cache (``~/.cache/workbench``). Every file is checked against the md5 its authors published; a
missing file is downloaded from the official source into the cache (atomic write, checksum,
retries), and when that is impossible the error says which files to put where.

Images stay as uint8 in memory (MNIST: 47 MB, CIFAR-10: 184 MB) and are normalized per batch,
so a subset or a loader costs no copy of the whole set in float.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

# name -> (md5 of the official file, official url)
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_URLS = ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]
CIFAR_FILES = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CIFAR_TAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_TAR_MD5 = "c58f30108f718f92721af3b95e74349a"

# Per-channel statistics of the training sets on a 0..1 scale (see shared/data/SOURCES.md).
STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck")


class DataError(RuntimeError):
    """A data file is missing, corrupt or of the wrong kind."""


def search_dirs() -> list[Path]:
    """Where data files are looked for, in order."""
    dirs = []
    if os.environ.get("WORKBENCH_DATA"):
        dirs.append(Path(os.environ["WORKBENCH_DATA"]).expanduser())
    dirs.append(Path.cwd() / "data")
    checkout = Path(__file__).resolve().parent.parent / "data"   # e.g. from notebooks/
    if checkout != dirs[-1]:
        dirs.append(checkout)
    dirs.append(cache_dir())
    return dirs


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "workbench"


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, md5: str) -> Path:
    actual = md5_of(path)
    if actual != md5:
        raise DataError(
            f"{path} is corrupt, truncated or not the official file: md5 {actual}, "
            f"expected {md5} ({path.stat().st_size} bytes). Delete it or replace it with "
            "the official file.")
    return path


def locate(subdir: str, name: str, md5: str, download: bool = True) -> Path:
    """Path of a verified official file; downloads it into the cache if it is nowhere."""
    for d in search_dirs():
        path = d / subdir / name
        if path.exists():
            return _verified(path, md5)
    if download:
        try:
            _download(subdir)
            return _verified(cache_dir() / subdir / name, md5)
        except OSError as err:
            reason = f"download failed ({err})"
    else:
        reason = "download disabled"
    places = ", ".join(str(d / subdir) for d in search_dirs())
    needed = ", ".join(MNIST_FILES if subdir == "mnist" else CIFAR_FILES)
    raise DataError(
        f"{subdir}/{name} not found and {reason}. Put the official files ({needed}) in one "
        f"of: {places}; or set WORKBENCH_DATA to the folder that holds '{subdir}/'.")


def _fetch(url: str, dest: Path, md5: str | None, tries: int = 3) -> None:
    """Download to a temporary file beside dest, check, then rename (atomic)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(tries):
        fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as r:
                for block in iter(lambda: r.read(1 << 20), b""):
                    out.write(block)
            if md5 and md5_of(Path(tmp)) != md5:
                raise OSError(f"checksum mismatch for {url}")
            os.replace(tmp, dest)
            return
        except OSError:
            if attempt == tries - 1:
                raise
            time.sleep(2 ** attempt)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _download(subdir: str) -> None:
    root = cache_dir()
    if subdir == "mnist":
        for name, md5 in MNIST_FILES.items():
            if (root / "mnist" / name).exists():
                continue
            errors = []
            for base in MNIST_URLS:
                try:
                    _fetch(base + name, root / "mnist" / name, md5)
                    break
                except OSError as err:
                    errors.append(err)
            else:
                raise OSError("; ".join(map(str, errors)))
    else:
        tar = root / "cifar-10-python.tar.gz"
        _fetch(CIFAR_TAR_URL, tar, CIFAR_TAR_MD5)
        with tarfile.open(tar) as t:
            t.extractall(root, filter="data")
        tar.unlink()


# ---------------------------------------------------------------- parsing

def read_idx(path: Path) -> np.ndarray:
    """Parse a gzip IDX file (magic 0x0000 08 NN, big-endian dims, then uint8 data)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0:3] != b"\x00\x00\x08":
        raise DataError(f"{path} is not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(int)
    body = 4 + 4 * ndim
    if len(raw) - body != int(np.prod(dims)):
        raise DataError(f"{path} holds {len(raw) - body} bytes of data, its header says {dims}")
    return np.frombuffer(raw, np.uint8, offset=body).reshape(dims)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    images = batch[b"data"].reshape(-1, 3, 32, 32)
    return images, np.asarray(batch[b"labels"], dtype=np.uint8)


# ---------------------------------------------------------------- datasets

@dataclass
class Dataset:
    """uint8 images (N, C, H, W) and int64 labels, normalized when batched."""
    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        mean, std = (torch.tensor(s).view(1, -1, 1, 1) for s in STATS[self.name])
        return (images.float() / 255.0 - mean) / std

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole set as normalized float tensors (fine for test sets and subsets)."""
        return self.normalize(self.images), self.labels

    def subset(self, n: int, seed: int = 0) -> "Dataset":
        """A stratified random subset of n examples (same class shares as the full set)."""
        if not 0 < n <= len(self):
            raise ValueError(f"subset size n={n} must be in 1..{len(self)}")
        if n == len(self):
            return self
        g = np.random.default_rng(seed)
        labels = self.labels.numpy()
        classes, counts = np.unique(labels, return_counts=True)
        # Largest-remainder apportionment so that the shares add up to exactly n.
        exact = counts * n / len(labels)
        take = np.floor(exact).astype(int)
        take[np.argsort(exact - take)[::-1][: n - take.sum()]] += 1
        picked = [g.choice(np.flatnonzero(labels == c), k, replace=False)
                  for c, k in zip(classes, take)]
        index = torch.from_numpy(np.sort(np.concatenate(picked)))
        return Dataset(self.name, self.split, self.images[index], self.labels[index])

    def loader(self, batch_size: int = 128, shuffle: bool = False, seed: int = 0,
               augment: bool = False):
        """Yield normalized (x, y) batches. ``augment``: random shifts that keep the label,
        a crop after padding by 4 and a horizontal flip for colour images of objects (CIFAR),
        a crop after padding by 2 and no flip for grey digits (MNIST: a flipped 2 is no 2)."""
        n = len(self)
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            images = self.images[index]
            if augment:
                colour = self.shape[0] == 3
                images = random_crop_flip(images, g, pad=4 if colour else 2, flip=colour)
            yield self.normalize(images), self.labels[index]

    def batches(self, batch_size: int = 128) -> int:
        return -(-len(self) // batch_size)


def random_crop_flip(images: torch.Tensor, g: torch.Generator, pad: int = 4,
                     flip: bool = True) -> torch.Tensor:
    """Random crop after zero padding (a shift of up to ``pad`` pixels each way) and, if
    ``flip``, a random horizontal flip, on a uint8 batch."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w)
    if flip:
        flipped = torch.rand(n, generator=g) < 0.5
        cols = torch.where(flipped.view(n, 1, 1, 1), cols.flip(-1), cols)
    batch = torch.arange(n).view(n, 1, 1, 1)
    chan = torch.arange(images.shape[1]).view(1, -1, 1, 1)
    return padded[batch, chan, rows, cols]


@lru_cache(maxsize=4)
def mnist(split: str = "train") -> Dataset:
    """MNIST train (60,000) or test (10,000) from the official IDX files."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split={split!r}; allowed: 'train', 'test'")
    images = read_idx(locate("mnist", f"{prefix}-images-idx3-ubyte.gz",
                             MNIST_FILES[f"{prefix}-images-idx3-ubyte.gz"]))
    labels = read_idx(locate("mnist", f"{prefix}-labels-idx1-ubyte.gz",
                             MNIST_FILES[f"{prefix}-labels-idx1-ubyte.gz"]))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"MNIST {split}: images {images.shape} do not match labels {labels.shape}")
    return Dataset("mnist", split, torch.from_numpy(images.copy()).unsqueeze(1),
                   torch.from_numpy(labels.astype(np.int64)))


@lru_cache(maxsize=4)
def cifar10(split: str = "train") -> Dataset:
    """CIFAR-10 train (50,000) or test (10,000) from the official python batches."""
    names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}.get(split)
    if names is None:
        raise ValueError(f"split={split!r}; allowed: 'train', 'test'")
    parts = [_read_cifar_batch(locate("cifar-10-batches-py", n, CIFAR_FILES[n])) for n in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return Dataset("cifar10", split, torch.from_numpy(images),
                   torch.from_numpy(labels.astype(np.int64)))


def load(name: str, split: str = "train") -> Dataset:
    loaders = {"mnist": mnist, "cifar10": cifar10}
    if name not in loaders:
        raise ValueError(f"dataset {name!r}; allowed: {sorted(loaders)}")
    return loaders[name](split)
