"""One training loop for everything: ``fit`` and ``evaluate``, seeded, with progress bars.

Methods extend the loop through small hooks instead of copying it: a ``Hook`` may add a term
to the loss (a penalty, a distillation loss), act after every optimizer step (re-apply a mask,
clamp a quantizer) and after every epoch (prune a little more). See ``Hook``.

``with quiet():`` silences every progress bar and epoch line inside it (a pipeline's steps, a
lesson's tables). ``with seeded(seed):`` runs a block on its own random streams and gives the
caller's back after, so a method is deterministic without reseeding anybody's RNG.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import sys
import time
import contextvars
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import Dataset


class Hook:
    """Override what you need; every method is a no-op by default."""

    def loss(self, model, x, y, logits, loss):
        """Return the loss to minimize (add a penalty or a distillation term here)."""
        return loss

    def after_step(self, model):
        """Called after each optimizer step, under torch.no_grad()."""

    def after_epoch(self, model, epoch: int):
        """Called after each epoch (0-based), under torch.no_grad()."""


@dataclass
class Recipe:
    """The hyperparameters of one training run, stored in the zoo manifest."""
    epochs: int = 10
    lr: float = 0.05
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    schedule: str = "onecycle"          # "onecycle" | "cosine" | "constant"
    augment: bool = False               # random shifts (and flips on CIFAR): data.loader
    label_smoothing: float = 0.0
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.schedule not in ("onecycle", "cosine", "constant"):
            raise ValueError(f"schedule={self.schedule!r}; allowed: onecycle, cosine, constant")
        if self.epochs < 0 or self.lr <= 0 or self.batch_size < 1:
            raise ValueError(f"epochs={self.epochs}, lr={self.lr}, batch_size={self.batch_size}:"
                             " need epochs >= 0, lr > 0, batch_size >= 1")


_QUIET = contextvars.ContextVar("workbench_quiet", default=False)


@contextlib.contextmanager
def quiet():
    """No progress bars or epoch lines from any training inside the block."""
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)


def is_quiet() -> bool:
    return _QUIET.get()


@contextlib.contextmanager
def seeded(seed: int):
    """Seed torch, numpy and random for the block; their previous states come back after.

    Dropout and weight initialization draw from torch's global generator, which has no
    per-call generator argument: forking it is how the block gets its own stream.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _scheduler(optimizer, recipe: Recipe, steps_per_epoch: int):
    total = max(1, recipe.epochs * steps_per_epoch)
    if recipe.schedule == "onecycle" and total >= 3:
        # OneCycleLR divides by zero when its warm-up lasts less than one step (e.g. 4 steps
        # at 25%), so very short runs warm up over two steps; one or two steps stay constant.
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.lr, total_steps=total,
                                                   pct_start=max(0.25, 2 / total))
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def fit(model: torch.nn.Module, train: Dataset, recipe: Recipe | None = None,
        hooks: list[Hook] = (), test: Dataset | None = None, progress: bool = True,
        optimizer: torch.optim.Optimizer | None = None,
        resume: str | Path | None = None) -> list[dict]:
    """Train ``model`` in place with SGD on ``train``; returns one dict of figures per epoch.

    Parameters that do not require grad (e.g. frozen layers) are left out of the optimizer.
    Pass ``optimizer`` to train other tensors (e.g. codebooks) with the same loop.
    ``resume``: a file where the state of the run (weights, optimizer, schedule, random state,
    history) is saved after every epoch; a run started again with the same file and recipe
    continues after the last saved epoch and ends as the uninterrupted run would. Long zoo
    trainings use it: a session that stops loses at most one epoch.

    A network with BatchNorm cannot train on a batch of one example (in training mode, a
    BatchNorm1d, or a BatchNorm2d on 1 x 1 maps, has one value per channel to normalize, and
    PyTorch raises "Expected more than 1 value per channel"): when ``len(train)`` is one more
    than a multiple of the batch size, such a network leaves the last batch of one out of each
    epoch (a different example each epoch, as the order is shuffled) and its learning-rate
    schedule counts one step fewer per epoch. A training set of one example is an error.
    """
    recipe = recipe or Recipe()
    progress = progress and not is_quiet()
    with seeded(recipe.seed):
        return _fit(model, train, recipe, hooks, test, progress, optimizer,
                    None if resume is None else Path(resume))


def _restore(path: Path | None, recipe: Recipe, model, optimizer, scheduler) -> list[dict]:
    """The history saved in ``path`` after loading its state into the run; [] to start."""
    state = _read_state(path)
    if state is None:
        return []
    if state.get("recipe") != asdict(recipe):
        print(f"{path}: saved with another recipe; starting afresh", file=sys.stderr)
        return []
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        print(f"{path}: saved for another network; starting afresh", file=sys.stderr)
        return []
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    print(f"{path}: resuming after epoch {len(state['history'])}/{recipe.epochs}",
          file=sys.stderr)
    return state["history"]


def saved_seconds(path: Path | None, recipe: Recipe) -> float:
    """Training seconds already spent by the run saved in ``path`` (0 if none or another)."""
    state = _read_state(path, quiet=True)
    if state is None:
        return 0.0
    return state.get("seconds", 0.0) if state.get("recipe") == asdict(recipe) else 0.0


def _read_state(path: Path | None, quiet: bool = False) -> dict | None:
    """The saved state of a run, or None (no file, or one that cannot be read: it is moved
    aside to ``<name>.unreadable``, not overwritten, and the run starts afresh). Tensors and
    plain data only (``weights_only``): these files may come with a clone of the repository."""
    if path is None or not Path(path).exists():
        return None
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:       # truncated, corrupt, or not ours
        if not quiet:
            aside = Path(path).with_name(Path(path).name + ".unreadable")
            os.replace(path, aside)
            print(f"{path}: cannot be read ({type(error).__name__}: {error}); moved to "
                  f"{aside}, starting afresh", file=sys.stderr)
        return None


def _save_state(path: Path, recipe: Recipe, model, optimizer, scheduler, history,
                seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    torch.save({"recipe": asdict(recipe), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(), "history": history, "seconds": seconds}, tmp)
    os.replace(tmp, path)


BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


def steps_per_epoch(model: torch.nn.Module, train: Dataset, batch_size: int) -> int:
    """The batches ``fit`` trains on per epoch: all, but a last batch of one example when the
    network has BatchNorm (see ``fit``)."""
    steps = train.batches(batch_size)
    if len(train) % batch_size == 1 and any(isinstance(m, BATCH_NORMS)
                                            for m in model.modules()):
        steps -= 1
        if steps == 0:
            raise ValueError(f"fit: train has {len(train)} example and "
                             f"{type(model).__name__} has BatchNorm, which cannot normalize "
                             f"one value per channel; allowed is a training set of 2 or more")
    return steps


def _fit(model, train, recipe, hooks, test, progress, optimizer, resume) -> list[dict]:
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                                    weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)
    steps = steps_per_epoch(model, train, recipe.batch_size)
    scheduler = _scheduler(optimizer, recipe, steps)
    history = _restore(resume, recipe, model, optimizer, scheduler)
    started = time.perf_counter() - saved_seconds(resume, recipe)
    for epoch in range(len(history), recipe.epochs):
        model.train()
        batches = train.loader(recipe.batch_size, shuffle=True, seed=recipe.seed * 1000 + epoch,
                               augment=recipe.augment)
        bar = tqdm(itertools.islice(batches, steps), total=steps, disable=not progress,
                   desc=f"epoch {epoch + 1}/{recipe.epochs}", leave=False)
        total_loss, correct, seen = 0.0, 0, 0
        for x, y in bar:
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
            for hook in hooks:
                loss = hook.loss(model, x, y, logits, loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                for hook in hooks:
                    hook.after_step(model)
            total_loss += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
        with torch.no_grad():
            for hook in hooks:
                hook.after_epoch(model, epoch)
        row = {"epoch": epoch + 1, "loss": total_loss / max(seen, 1),
               "train_acc": correct / max(seen, 1)}
        if test is not None:
            row["test_acc"] = evaluate(model, test)
        history.append(row)
        if resume is not None:
            _save_state(resume, recipe, model, optimizer, scheduler, history,
                        time.perf_counter() - started)
        if progress:
            tqdm.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in row.items()))
    model.eval()
    return history


@torch.no_grad()
def predict(model: torch.nn.Module, data: Dataset, batch_size: int = 1000) -> torch.Tensor:
    """Predicted class of every example, model in eval mode (restored afterwards)."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(x).argmax(1) for x, _ in data.loader(batch_size)])
    model.train(was_training)
    return out


def evaluate(model: torch.nn.Module, data: Dataset, batch_size: int = 1000) -> float:
    """Top-1 accuracy (0..1) on ``data``."""
    return (predict(model, data, batch_size) == data.labels).float().mean().item()
