"""The method contract shared by every catalogue id (version 2).

A method is a dataclass of its hyperparameters (all knobs in the constructor, no logic there,
as in scikit-learn estimators). Each field declares its *domain* with ``knob(default,
domain)``; one validator checks every field against it when the method is made, so a bad
value fails at once with a ValueError that names the field, the value and what is allowed, and
the contract test can try values outside every domain.

``apply(model, data=None)`` is the same for every method: it checks that the method supports
the model (``supports``, decided from the model's layers, never from a zoo name) and has the
data it needs, then calls ``compress`` on a private copy, so the input is never touched (the
``inplace=False`` habit of torch.ao) and a notebook slider can apply a method to the same base
model again and again. A method writes only ``compress`` (and, when it needs to, ``tags``,
``supports``, ``check_model`` and ``validate`` for rules between fields).

What a method can do is asked of the instance (``tags()``, ``supports(model)``), in the spirit
of scikit-learn's estimator tags: whether it needs data *with these settings*, whether it is
lossless, its bits per weight. Methods that train derive from ``TrainingMethod``, which
declares the training knobs once and trains through ``train.fit``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, fields, replace
from typing import ClassVar

import torch
from torch import nn

from .domains import (Choice, Domain, Flag, Int, Invalid, Mapping, Name, Optional,  # noqa: F401
                      Real, Seq, domain_of, knob)

# ------------------------------------------------------------------ tags and effects


@dataclass(frozen=True)
class Tags:
    """What a method does with its current settings (scikit-learn's estimator tags)."""
    needs_data: bool = False        # apply() needs the training set (it trains or samples)
    lossless: bool = False          # the network computes exactly what its input computed
    bits_per_weight: float | None = None   # nominal bits of a stored weight, if it sets them


# What a method may be declared to do at its smoke settings; the contract test checks it.
EFFECTS = {
    "fewer_nonzeros": "fewer nonzero parameters than its input",
    "fewer_bytes": "a smaller encoded file than its input",
    "fewer_macs": "fewer multiply-accumulates per image than its input",
    "smaller_module": "fewer parameters than its input (a physically smaller network)",
    "different_outputs": "outputs that differ from its input's",
    "same_outputs": "exactly the outputs of its input (lossless)",
    "encoding": "an encoding attached to the network that its input did not carry",
}


# ------------------------------------------------------------------ the contract


def check_fields(obj) -> None:
    """Check (and normalize) every field of the dataclass ``obj`` against its domain; a
    refused value is a ValueError "Class.field=value: allowed is ..."."""
    for f in fields(obj):
        domain = domain_of(type(obj), f.name)
        if domain is None:
            continue
        value = getattr(obj, f.name)
        try:
            setattr(obj, f.name, domain.check(value))
        except Invalid as err:
            detail = str(err) or f"allowed is {domain.describe()}"
            raise ValueError(f"{type(obj).__name__}.{f.name}={value!r}: {detail}") from None


@dataclass
class Method:
    id: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    # field -> (low, high, step): the ranges a notebook slider may set
    sliders: ClassVar[dict[str, tuple[float, float, float]]] = {}
    # Settings that make apply() take about a second on a few hundred images: used by the
    # contract test and by smoke runs of the notebooks. Never the defaults of a lesson.
    smoke: ClassVar[dict] = {}
    # What apply() must do at the smoke settings (keys of EFFECTS), so that a stub fails.
    effects: ClassVar[tuple[str, ...]] = ()
    # What a supported network must contain, for the error when it does not.
    requires: ClassVar[str] = "Conv2d or Linear layers"

    @classmethod
    def smoke_beside(cls, overrides: dict) -> dict:
        """The smoke settings to merge under ``overrides``: ``smoke`` unless an override
        changes what the smoke settings must be (a chain's step chosen by a setting)."""
        return dict(cls.smoke)

    def __post_init__(self):
        check_fields(self)
        self.validate()

    def validate(self) -> None:
        """Rules between fields (each field alone is checked by its domain)."""

    # -- what the method can do, asked of the instance
    def tags(self) -> Tags:
        return Tags()

    def supports(self, model: nn.Module) -> bool:
        """Whether the method applies to ``model``, decided from its layers."""
        return any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())

    def check_model(self, model: nn.Module) -> None:
        """Checks of the settings against this model (e.g. layer names), before any work."""

    def checkpoints(self) -> tuple[str, ...]:
        """Zoo networks this method reads besides the network it is given (a teacher, a
        trained architecture): their checksums belong in any cache key of its results."""
        return ()

    def unavailable(self) -> str | None:
        """Why these settings cannot run on this machine yet (a checkpoint still to be
        trained, say, with the command that makes it), or None. The survey lists such a
        method with this reason instead of failing."""
        return None

    def bits_per_weight(self) -> float | None:
        return self.tags().bits_per_weight

    # -- the one entry point
    def apply(self, model: nn.Module, data=None) -> nn.Module:
        """A new compressed network; ``model`` is untouched."""
        if not self.supports(model):
            raise ValueError(f"{self.id} needs {self.requires}; {type(model).__name__} has "
                             "none it can use")
        self.check_model(model)
        if data is None and self.tags().needs_data:
            raise ValueError(f"{self.id} with these settings needs data: pass the training "
                             "set as apply(model, data)")
        out = self.compress(clone_model(model), data)
        return out.eval()

    def compress(self, model: nn.Module, data=None) -> nn.Module:
        """Compress ``model``, a private copy the method may change; return the network."""
        raise NotImplementedError

    # -- for tables
    def params(self) -> dict:
        """Every hyperparameter (what the constructor takes)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def settings(self) -> dict:
        """The hyperparameters in effect, for tables (a method hides knobs it ignores)."""
        return self.params()


# Bounds a typo cannot turn into hours: 1000 epochs is the longest schedule of the catalogue's
# papers; a batch holds two images at least (BatchNorm cannot train on one).
TRAIN_DOMAINS = {"epochs": Int(0, 1000), "lr": Real(1e-9, 10.0), "batch_size": Int(2, 1 << 16),
                 "weight_decay": Real(0.0, 1.0), "seed": Int(0, 2**31 - 1)}


@dataclass
class TrainingBase(Method):
    """A method that trains: the training knobs are declared and checked here, once, and
    training goes through ``train.fit`` (``fit`` below). A subclass changes a default by
    redeclaring the field (``epochs: int = 5``); the domain stays this one.
    ``train.quiet()`` silences every trainer. Distillation methods derive from this base;
    methods that retrain the network they are given derive from ``TrainingMethod``."""
    epochs: int = knob(1, TRAIN_DOMAINS["epochs"])
    lr: float = knob(0.01, TRAIN_DOMAINS["lr"])
    batch_size: int = knob(128, TRAIN_DOMAINS["batch_size"])
    weight_decay: float = knob(0.0, TRAIN_DOMAINS["weight_decay"])
    seed: int = knob(0, TRAIN_DOMAINS["seed"])

    def tags(self) -> Tags:
        return replace(super().tags(), needs_data=self.epochs > 0)

    def recipe(self, **changes):
        """The ``train.Recipe`` of these knobs, with ``changes`` (schedule, seed ...)."""
        from .train import Recipe
        knobs = dict(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                     weight_decay=self.weight_decay, seed=self.seed)
        return Recipe(**{**knobs, **changes})

    def training_hooks(self) -> list:
        """Hooks every training run of this method gets (none here)."""
        return []

    def fit(self, model: nn.Module, data, hooks=(), optimizer=None, **changes) -> list[dict]:
        """Train ``model`` in place with ``self.recipe(**changes)`` and ``hooks``; a training
        that diverged (weights no longer finite) is an error naming the learning rate, never
        a network returned that computes NaN."""
        from .train import fit
        recipe = self.recipe(**changes)
        history = fit(model, data, recipe, hooks=[*self.training_hooks(), *hooks],
                      optimizer=optimizer)
        broken = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        if broken:
            raise ValueError(
                f"{type(self).__name__}.lr={recipe.lr!r}: the training diverged (weights of "
                f"{broken[:3]} are no longer finite) at batch_size={recipe.batch_size}; "
                f"allowed is a smaller lr or a larger batch_size")
        return history


@dataclass(frozen=True)
class Teacher(Domain):
    """Who teaches a retraining: "input" (the network given to ``apply``, before this
    method changed it) or the name of a zoo network."""

    def check(self, value):
        from .models import ARCHITECTURES
        if not isinstance(value, str) or (value != "input" and value not in ARCHITECTURES):
            raise Invalid
        return value

    def describe(self):
        from .models import ARCHITECTURES
        return f"'input' or a zoo network: {sorted(ARCHITECTURES)}"

    def bad_values(self):
        return [5, "no_such_net", ["input"]]


TEACHER_KNOBS = ("kd_teacher", "kd_temperature", "kd_weight")


@dataclass
class TrainingMethod(TrainingBase):
    """A method that retrains the network it is given (pruning, trained quantization,
    binarization, factorization ...). A teacher can help that retraining: with ``kd_teacher``
    set, every training run of the method mixes the hard-label loss with the teacher's soft
    targets (``distill.losses.TeacherLoss``: ``kd_weight`` is the soft share, at temperature
    ``kd_temperature``). "input" is the network as it was before this method touched it,
    the usual way to give back accuracy lost to compression."""
    kd_teacher: str | None = knob(None, Optional(Teacher()))
    kd_temperature: float = knob(4.0, Real(1.0, 100.0))
    kd_weight: float = knob(0.5, Real(0.0, 1.0))

    _teacher: ClassVar = None            # the frozen teacher, only while apply() runs

    def apply(self, model: nn.Module, data=None) -> nn.Module:
        if self.kd_teacher is None or not self.tags().needs_data:
            return super().apply(model, data)
        self._teacher = self.load_teacher(model, data)
        try:
            return super().apply(model, data)
        finally:
            self._teacher = None

    def checkpoints(self) -> tuple[str, ...]:
        if self.kd_teacher in (None, "input") or not self.tags().needs_data:
            return super().checkpoints()
        return (*super().checkpoints(), self.kd_teacher)

    def load_teacher(self, model: nn.Module, data=None) -> nn.Module:
        """A frozen copy of the input, or the zoo network ``kd_teacher`` (which must take
        the data's images)."""
        from .distill.losses import frozen
        if self.kd_teacher == "input":
            return frozen(clone_model(model))
        from .models import ARCHITECTURES
        from .zoo import pretrained
        takes = tuple(ARCHITECTURES[self.kd_teacher][0].input_shape)
        shape = getattr(data, "shape", None)
        if shape is not None and takes != tuple(shape):
            raise ValueError(f"{type(self).__name__}.kd_teacher={self.kd_teacher!r} takes "
                             f"images of shape {takes}, not the data's {tuple(shape)}")
        return frozen(pretrained(self.kd_teacher))

    def training_hooks(self) -> list:
        if self._teacher is None:
            return []
        from .distill.losses import TeacherLoss
        return [TeacherLoss(self._teacher, self.kd_temperature, self.kd_weight)]

    def teacher_settings(self) -> dict:
        """The teacher's knobs when one is set (for ``settings``), else nothing."""
        if self.kd_teacher is None:
            return {}
        return {"kd_teacher": self.kd_teacher, "kd_temperature": self.kd_temperature,
                "kd_weight": self.kd_weight}

    def settings(self) -> dict:
        shown = {k: v for k, v in super().settings().items() if k not in TEACHER_KNOBS}
        if shown.get("augment") is False:   # off by default: earlier results keep their keys
            del shown["augment"]
        return {**shown, **self.teacher_settings()}


# ------------------------------------------------------------------ helpers


def derived_seed(seed: int, part: int) -> int:
    """The seed of part ``part`` (a round, a copy) of a run seeded with ``seed``: ``seed *
    1000 + part``, kept below 2**32 (numpy's and torch's loaders refuse more), so a seed
    anywhere in its allowed range works and every realistic seed keeps its old streams.

    The reduction modulo 2**32 makes distinct (seed, part) pairs collide: 1000 * 2**29 is a
    multiple of 2**32, so seeds 2**29 apart give every part the same seed (and a part of 1000
    or more meets the next seed's parts, modulo or not). That is acceptable because a
    collision only makes two runs share a random stream: each run stays deterministic and
    correct, and the seeds people choose (0, 1, 42, a date) lie far closer together than
    2**29, while the parts are rounds or workers, far fewer than 1000."""
    return (seed * 1000 + part) % (1 << 32)


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` that also works on pruned or parametrized networks.

    After a forward pass with autograd on, torch.nn.utils.prune leaves the masked weight as a
    computed (non-leaf) tensor, which ``copy.deepcopy`` refuses. It is only a cache, recomputed
    before every forward, so the copy gets a detached clone of it and the input is untouched.
    """
    memo = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


def layers_of(model: nn.Module, kinds=(nn.Conv2d, nn.Linear)) -> list[tuple[str, nn.Module]]:
    """(name, module) of the layers of the given kinds, in order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]


# The domain of a ``layers`` knob: None (every layer the method can use) or some names.
LAYER_NAMES = Optional(Seq(Name(), 1))


def plain_conv(module: nn.Module) -> bool:
    """A dense convolution that a method may rewrite as other convolutions: one group, zero
    padding given as numbers (not "same"), so stride, padding and dilation carry over."""
    return (isinstance(module, nn.Conv2d) and module.groups == 1
            and module.padding_mode == "zeros" and not isinstance(module.padding, str))


def chosen_layers(model: nn.Module, eligible, layers=None) -> list[str]:
    """Names of the modules of ``model`` that ``eligible(module)`` accepts, in order; only
    those in ``layers`` when it is given (a ``layers`` knob: None means all)."""
    return [n for n, m in model.named_modules()
            if eligible(m) and (layers is None or n in layers)]


def check_layer_names(method: Method, field: str, model: nn.Module,
                      kinds=(nn.Conv2d, nn.Linear)) -> None:
    """The layer names in ``method.<field>`` (a name, names, or a dict keyed by names) must be
    layers of ``model``: a ValueError naming the field, the unknown names and the allowed ones
    (called from ``check_model``, before any work)."""
    value = getattr(method, field)
    names = [] if value is None else [value] if isinstance(value, str) else list(value)
    known = [n for n, _ in layers_of(model, kinds)]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"{type(method).__name__}.{field}={value!r}: {unknown} are not layers "
                         f"of {type(model).__name__} it can use; allowed is any of {known}")
