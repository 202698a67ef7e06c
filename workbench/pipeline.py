"""Compressors made of other compressors (catalogue section G).

``Hybrid`` is a list of methods applied in order, each to the previous one's output: e.g.
distill, then prune, then quantize. ``DeepCompression`` (Han, Mao, Dally 2016) is its flagship
instance: iterative magnitude pruning with retraining (Han et al. 2015; or Dynamic Network
Surgery, Guo et al. 2016, whose pruned weights can grow back), then k-means weight
sharing per layer with the centroids fine-tuned (conv and fc layers with their own number of
bits), then Huffman coding of the weight indices and of the sparse relative positions. The
first two stages change the network; the third (``encode.huffman``) is lossless and lives in
the file format: the network it returns carries its encoding, so ``codec.encode`` and
``measure.report`` give the Huffman-coded bytes (see ``workbench.huffman``).

``stages(model, data)`` returns the network after every step, so a lesson or the ``reproduce``
command can show the bytes and the accuracy stage by stage. A chain's settings are checked
when it is made, step by step, so a bad value deep inside names its step and field.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from torch import nn

from .method import Choice, Domain, Flag, Int, Invalid, Method, Real, Tags, knob


def make_method(method_id: str, settings: dict, where: str) -> Method:
    """The method ``method_id`` with ``settings``; a bad one raises Invalid naming ``where``."""
    from . import METHODS
    if not isinstance(method_id, str) or method_id not in METHODS \
            or method_id.startswith("pipeline."):
        raise Invalid(f"{where}: {method_id!r} is not a method here; allowed: the ids of "
                      "workbench.METHODS outside pipeline.*")
    if not isinstance(settings, dict):
        raise Invalid(f"{where} ({method_id}): settings {settings!r}; allowed is a dict")
    known = [f.name for f in fields(METHODS[method_id])]
    unknown = [key for key in settings if key not in known]
    if unknown:
        raise Invalid(f"{where} ({method_id}): unknown settings {unknown}; allowed is any of "
                      f"{known}")
    try:
        return METHODS[method_id](**settings)
    except TypeError as err:                 # a setting the method does not have
        raise Invalid(f"{where} ({method_id}): {err}") from None
    except ValueError as err:
        raise Invalid(f"{where} ({method_id}): {err}") from None


@dataclass(frozen=True)
class Steps(Domain):
    """A non-empty list of (catalogue id, settings dict) pairs, each a valid method."""

    def check(self, value):
        if isinstance(value, (str, bytes, dict)) or not isinstance(value, (tuple, list)) \
                or not value:
            raise Invalid
        out = []
        for position, step in enumerate(value):
            if not (isinstance(step, (tuple, list)) and len(step) == 2):
                raise Invalid(f"step {position} is {step!r}; allowed is a pair "
                              "(catalogue id, dict of settings)")
            make_method(step[0], step[1], f"step {position}")
            out.append((step[0], dict(step[1])))
        return tuple(out)

    def describe(self):
        return "a non-empty list of (catalogue id, settings dict) pairs"

    def bad_values(self):
        return ["x", 5, None, (), [("prune.magnitude",)], [("no.such", {})],
                [("prune.magnitude", 5)], [("prune.magnitude", {"sparsity": 5})],
                [("prune.magnitude", {"no_such_field": 1})], [("pipeline.hybrid", {})]]


@dataclass(frozen=True)
class SettingsOf(Domain):
    """A dict of settings of the method that another field names (``field``); only its type
    is checked here: the owner's ``validate`` makes that method with it."""
    field: str

    def check(self, value):
        if not isinstance(value, dict):
            raise Invalid
        return dict(value)

    def method_of(self, owner: Method) -> str:
        return getattr(owner, self.field)

    def describe(self):
        return f"a dict of settings of the method that {self.field} names"

    def bad_values(self):
        return [5, "x", None, {"no_such_field": 1}, {"epochs": -1}, {"epochs": "x"}]


@dataclass
class Chain(Method):
    """Methods applied in order, each to the previous one's output. ``data`` goes to the
    steps that need it."""
    effects = ("fewer_nonzeros", "fewer_bytes")

    def steps_settings(self) -> tuple:
        """((catalogue id, settings), ...) of the steps."""
        raise NotImplementedError

    def methods(self) -> list[Method]:
        return [make_method(mid, settings, f"step {i}")
                for i, (mid, settings) in enumerate(self.steps_settings())]

    def tags(self) -> Tags:
        steps = [m.tags() for m in self.methods()]
        bits = next((t.bits_per_weight for t in reversed(steps)
                     if t.bits_per_weight is not None), None)
        return Tags(needs_data=any(t.needs_data for t in steps),
                    lossless=all(t.lossless for t in steps), bits_per_weight=bits)

    def steps_on_input(self) -> list[Method]:
        """The steps that see the input network itself: up to the first one that builds a
        new network (a distillation returns a student); the later steps work on that student,
        which does not exist yet, and are checked when they run."""
        from .distill.base import Distillation
        out = []
        for method in self.methods():
            out.append(method)
            if isinstance(method, Distillation):
                break
        return out

    def supports(self, model: nn.Module) -> bool:
        return all(m.supports(model) for m in self.steps_on_input())

    def step_field(self, position: int, inner: str) -> str:
        """The field of this class that set the inner method's field ``inner`` of step
        ``position`` (errors name what the user set, not the inner method's own field)."""
        return "steps"

    def step_error(self, position: int, method: Method, err: Exception) -> ValueError:
        head = str(err).split("=", 1)[0]
        inner = head.rpartition(".")[2] if head.startswith(type(method).__name__ + ".") else ""
        field = self.step_field(position, inner)
        return ValueError(f"{type(self).__name__}.{field}={getattr(self, field)!r}: step "
                          f"{position} ({method.id}): {err}")

    def check_model(self, model: nn.Module) -> None:
        for position, method in enumerate(self.steps_on_input()):
            try:
                method.check_model(model)
            except ValueError as err:
                raise self.step_error(position, method, err) from None

    def stages(self, model: nn.Module, data=None) -> list[tuple[str, nn.Module]]:
        """[(method id, network after it), ...], the input first as ("base", model).
        Quiet runs: ``with workbench.train.quiet():``. A step's error names the step."""
        out, current = [("base", model)], model
        for position, method in enumerate(self.methods()):
            try:
                current = method.apply(current, data if method.tags().needs_data else None)
            except ValueError as err:
                raise self.step_error(position, method, err) from None
            out.append((method.id, current))
        return out

    def compress(self, model: nn.Module, data=None) -> nn.Module:
        return self.stages(model, data)[-1][1]


@dataclass
class Hybrid(Chain):
    """Any chain of methods as one compressor (seed 004's "future directions": combining the
    families)."""
    id = "pipeline.hybrid"
    reference = "Combining compression families, as the surveys suggest (seed 004)"
    smoke = {"steps": (("prune.magnitude", {"sparsity": 0.8}),
                       ("quant.kmeans", {"k": 4}))}

    steps: tuple = knob((("prune.magnitude", {"sparsity": 0.8}), ("quant.kmeans", {"k": 16})),
                        Steps())

    def steps_settings(self) -> tuple:
        return self.steps


PRUNERS = ("prune.iterative", "prune.dns")     # the first stage of Deep Compression


@dataclass
class DeepCompression(Chain):
    """Prune, share, Huffman-code (Han, Mao, Dally 2016).

    ``pruner``: ``prune.iterative`` (the paper's magnitude pruning with retraining) or
    ``prune.dns`` (Dynamic Network Surgery, whose pruned weights can come back); ``prune``: that
    method's settings (per-layer shares, rounds, epochs; or thresholds and epochs); then
    ``quant.trained_kmeans`` with ``2**fc_bits - 1`` shared weights per fully connected layer
    and ``2**conv_bits - 1`` per convolution, the last of the ``2**bits`` codes being the zero of
    the pruned weights (the paper: 8 bits for conv, 5 for fc layers on AlexNet),
    for ``quant_epochs`` epochs (zeros stay zero; on shifted images if ``quant_augment``, as
    the pruner's own ``augment`` does for its retraining), the biases rounded to float16 if
    ``half_biases``; then ``encode.huffman``.
    """
    id = "pipeline.deep_compression"
    reference = ("Han, Mao, Dally 2016, Deep Compression: Compressing Deep Neural Networks "
                 "with Pruning, Trained Quantization and Huffman Coding")
    sliders = {"fc_bits": (2, 8, 1), "conv_bits": (2, 8, 1)}
    smoke = {"prune": {"rounds": 1, "epochs": 1}, "quant_epochs": 1}
    effects = ("fewer_nonzeros", "fewer_bytes", "encoding")

    pruner: str = knob("prune.iterative", Choice(PRUNERS))
    prune: dict = knob({}, SettingsOf("pruner"))
    fc_bits: int = knob(5, Int(2, 16))
    conv_bits: int = knob(8, Int(2, 16))
    quant_epochs: int = knob(3, Int(0, 1000))
    quant_lr: float = knob(1e-4, Real(1e-9, 10.0))
    half_biases: bool = knob(False, Flag())
    quant_augment: bool = knob(False, Flag())

    @classmethod
    def smoke_beside(cls, overrides: dict) -> dict:
        # the prune dict holds the chosen pruner's own smoke settings (DNS has no rounds)
        pruner = overrides.get("pruner", cls.pruner)
        if pruner not in PRUNERS:
            return dict(cls.smoke)            # the constructor names the bad pruner
        from . import METHODS
        return {**cls.smoke, "prune": dict(METHODS[pruner].smoke)}

    def validate(self):
        try:
            make_method(self.pruner, self.prune, "pruner")
        except Invalid as err:
            raise ValueError(f"{type(self).__name__}.prune={self.prune!r}: {err}") from None

    def step_field(self, position: int, inner: str) -> str:
        if position == 0:
            return "prune"
        quant = {"lr": "quant_lr", "epochs": "quant_epochs", "k": "fc_bits",
                 "conv_k": "conv_bits", "half_biases": "half_biases",
                 "augment": "quant_augment"}
        return quant.get(inner, "quant_lr") if position == 1 else "fc_bits"

    def steps_settings(self) -> tuple:
        # b bits index 2**b symbols: 2**b - 1 shared weights and the zero of pruned weights
        # (and of the sparse format's filler entries).
        return ((self.pruner, dict(self.prune)),
                ("quant.trained_kmeans", {"k": 2 ** self.fc_bits - 1,
                                          "conv_k": 2 ** self.conv_bits - 1,
                                          "epochs": self.quant_epochs, "lr": self.quant_lr,
                                          "half_biases": self.half_biases,
                                          "augment": self.quant_augment}),
                ("encode.huffman", {}))

    def settings(self) -> dict:
        shown = super().settings()
        if not self.quant_augment:          # off by default: earlier results keep their keys
            del shown["quant_augment"]
        return shown

    def tags(self) -> Tags:
        return Tags(needs_data=True, bits_per_weight=float(self.fc_bits))


METHODS = (Hybrid, DeepCompression)
