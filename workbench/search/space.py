"""The search space: which knobs of the searched method a search may set, and to what.

A space maps a *key* to a range or to choices:

- ``(low, high)``: a number in [low, high] (continuous for a real knob);
- ``(low, high, step)``: low, low + step, ... up to high (the form of a method's ``sliders``);
- ``[a, b, c]``: one of these values (a list; ``(4, 8)`` is a range, ``[4, 8]`` two choices).

A key names a field of the searched method (``"sparsity"``), a field of one step of a chain
(``"0.sparsity"``, ``"1.k"`` for ``pipeline.hybrid``), a field of a settings dict
(``"prune.sparsity"`` for ``pipeline.deep_compression``, ``"prune.c_rate"`` with its
``pruner="prune.dns"``), or whether a chain's step is used
(``"2.use": [True, False]``). ``fixed`` settings use the same keys. The default space is what the
method declares: its ``sliders`` (each step's, for a chain), only those its ``settings()`` show
(a knob the other settings make it ignore, e.g. ``quality`` when pruning ``by="sparsity"``, is
left out) and not those held ``fixed``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ..domains import Domain, Int, Invalid, domain_of
from ..method import Method

_PLAIN = (bool, int, float, str, type(None))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def is_range(spec) -> bool:
    return isinstance(spec, tuple)


def normalized_spec(key: str, spec):
    """``spec`` as a range tuple or a choices list; Invalid saying why not."""
    if isinstance(spec, tuple) and len(spec) in (2, 3) and all(map(_number, spec)):
        low, high, *step = spec
        if not low < high or (step and step[0] <= 0):
            raise Invalid(f"{key!r}: {spec!r}; allowed is a range with low < high and a "
                          "positive step")
        return tuple(spec)
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(v, _PLAIN) for v in spec):
        return list(spec)
    raise Invalid(f"{key!r}: {spec!r}; allowed is (low, high), (low, high, step) or a list "
                  "of choices")


@dataclass(frozen=True)
class SpaceSpec(Domain):
    """A dict {key: range or choices} (the keys are checked against the searched method)."""

    def check(self, value):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise Invalid
        return {k: normalized_spec(k, v) for k, v in value.items()}

    def describe(self):
        return ("a dict {knob: (low, high) | (low, high, step) | [choices]}, {} for the "
                "searched method's sliders")

    def bad_values(self):
        return [5, "x", None, {3: (0, 1)}, {"sparsity": (1, 0)}, {"sparsity": []},
                {"sparsity": "x"}, {"sparsity": (0, 1, -1)}]


@dataclass(frozen=True)
class FlatSettings(Domain):
    """A dict {key: value} of settings held fixed (checked by making the searched method)."""

    def check(self, value):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise Invalid
        return dict(value)

    def describe(self):
        return "a dict {knob: value} of the searched method's settings"

    def bad_values(self):
        return [5, "x", None, {3: 1}]


# ------------------------------------------------------------------ keys -> a method


def build(method_id: str, flat: dict) -> Method:
    """The method ``method_id`` with the flat ``{key: value}`` settings (keys as above)."""
    from .. import METHODS
    cls = METHODS[method_id]
    top = {k: v for k, v in flat.items() if "." not in k}
    nested = [(k, v) for k, v in flat.items() if "." in k]
    names = [f.name for f in fields(cls)]
    unknown = [k for k in top if k not in names]
    if unknown:
        raise Invalid(f"{unknown} are not knobs of {method_id}; allowed is any of {names}")
    chain = is_chain_of_steps(cls)
    steps = [list(s) for s in top.get("steps", cls().steps)] if chain else []
    used = [True] * len(steps)
    for key, value in nested:
        head, _, tail = key.partition(".")
        if head.isdigit() and chain:
            if int(head) >= len(steps):
                raise Invalid(f"{key!r}: the chain has steps 0..{len(steps) - 1}")
            if tail == "use":
                used[int(head)] = value
            else:
                steps[int(head)][1] = {**steps[int(head)][1], tail: value}
        elif head in names and isinstance(getattr(cls(), head), dict):
            top[head] = {**top.get(head, getattr(cls(), head)), tail: value}
        else:
            raise Invalid(f"{key!r} names no step or settings dict of {method_id}")
    if chain:
        if not any(used):
            raise Invalid("every step of the chain is left out")
        top["steps"] = tuple((mid, s) for (mid, s), on in zip(steps, used) if on is not False)
    try:
        return cls(**top)
    except ValueError as err:
        raise Invalid(str(err)) from None


def is_chain_of_steps(cls) -> bool:
    """Whether the method is a chain whose ``steps`` field lists its steps (pipeline.hybrid)."""
    from ..pipeline import Steps
    return isinstance(domain_of(cls, "steps"), Steps)


def _own_sliders(method: Method, prefix: str) -> dict:
    shown = method.settings()
    return {prefix + k: tuple(v) for k, v in type(method).sliders.items() if k in shown}


def default_space(method_id: str, fixed: dict) -> dict:
    """The searched method's own sliders in effect (each step's for a chain), minus ``fixed``."""
    method = build(method_id, fixed)
    if is_chain_of_steps(type(method)):
        space = {}
        for i, step in enumerate(method.methods()):
            space.update(_own_sliders(step, f"{i}."))
    else:
        space = _own_sliders(method, "")
    return {k: v for k, v in space.items() if k not in fixed}


def _ends(spec) -> list:
    return list(spec[:2]) if is_range(spec) else list(spec)


def check_space(method_id: str, fixed: dict, space: dict) -> None:
    """Every key names a knob and every end of a range (every choice) is a value it takes."""
    for key, spec in space.items():
        for value in _ends(spec):
            try:
                build(method_id, {**fixed, key: value})
            except Invalid as err:
                raise Invalid(f"{key!r}: {value!r}: {err}") from None


def knob_domain(method_id: str, fixed: dict, key: str) -> Domain | None:
    """The domain of the knob ``key`` names (a step's field, a settings dict's field)."""
    from .. import METHODS
    head, _, tail = key.partition(".")
    if not tail:
        return domain_of(METHODS[method_id], key)
    method = build(method_id, fixed)
    if head.isdigit():
        return domain_of(type(method.methods()[int(head)]), tail)
    inner = domain_of(type(method), head)
    # a pipeline's settings dict (pipeline.SettingsOf) names its method in another field
    inner_id = inner.method_of(method) if hasattr(inner, "method_of") else None
    return domain_of(METHODS[inner_id], tail) if inner_id in METHODS else None


def named_by(method_id: str, key: str) -> set[str]:
    """The fields a settings dict ``key`` is read against (Deep Compression's ``prune`` names
    its ``pruner``); empty for any other knob."""
    from .. import METHODS
    domain = domain_of(METHODS[method_id], key) if method_id in METHODS else None
    return {domain.field} if hasattr(domain, "method_of") else set()


def is_whole(method_id: str, fixed: dict, key: str, spec) -> bool:
    """Whether a range is sampled as whole numbers: an Int knob, or whole ends and step."""
    if isinstance(knob_domain(method_id, fixed, key), Int):
        return True
    return all(isinstance(v, int) for v in spec)


def suggest(trial, method_id: str, fixed: dict, space: dict) -> dict:
    """One point of ``space`` drawn through the trial (its sampler decides)."""
    point = {}
    for key, spec in space.items():
        if not is_range(spec):
            point[key] = trial.suggest_categorical(key, spec)
        elif is_whole(method_id, fixed, key, spec):
            point[key] = trial.suggest_int(key, int(spec[0]), int(spec[1]),
                                           step=int(spec[2]) if len(spec) == 3 else 1)
        else:
            point[key] = trial.suggest_float(key, spec[0], spec[1],
                                             step=spec[2] if len(spec) == 3 else None)
    return point


def grid_values(method_id: str, fixed: dict, key: str, spec) -> list:
    """The values of one knob on the grid: the choices, or low, low + step, ... <= high."""
    if not is_range(spec):
        return list(spec)
    if len(spec) == 2:
        raise Invalid(f"{key!r}: {spec!r} is continuous; a grid needs (low, high, step) or a "
                      "list of choices")
    low, high, step = spec
    count = math.floor((high - low) / step + 1e-9) + 1
    if is_whole(method_id, fixed, key, spec):
        return [int(low) + i * int(step) for i in range(count)]
    # rounded as Optuna rounds a stepped float, so grid and suggestion agree
    digits = max(0, -math.floor(math.log10(step)) + 6)
    return [round(low + i * step, digits) for i in range(count)]


def grid_of(method_id: str, fixed: dict, space: dict) -> dict:
    return {key: grid_values(method_id, fixed, key, spec) for key, spec in space.items()}
