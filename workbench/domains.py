"""What a method's field accepts: its *domain* (scikit-learn's parameter constraints idea).

A field is declared with ``knob(default, domain)``; ``Method`` checks every field against its
domain when the method is made. ``check`` returns the value, normalized (16.0 -> 16 for a whole
number, a list -> a tuple), or raises ``Invalid``; ``bad_values`` lists values the domain must
refuse, which the contract test tries on every field of every method.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

class Domain:
    """What a field accepts. ``check`` returns the value (normalized, e.g. 16.0 -> 16) or
    raises ValueError; ``bad_values`` lists values that must be refused (contract test)."""

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def bad_values(self) -> list:
        return []


class Invalid(ValueError):
    """Raised by a domain; the method turns it into a message naming the field. Its text,
    if any, says what was wrong inside a nested value."""


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Real(Domain):
    """A real number in [low, high]; NaN, booleans and strings are refused, infinity too
    unless it is a bound."""
    low: float = -math.inf
    high: float = math.inf

    def check(self, value):
        if not _is_number(value) or math.isnan(value) or not self.low <= value <= self.high:
            raise Invalid
        return value

    def describe(self):
        return f"a number from {self.low} to {self.high}"

    def bad_values(self):
        out = ["x", None, True, float("nan"), [self.low]]
        if self.low > -math.inf:
            out.append(self.low - max(1.0, abs(self.low)))
        if self.high < math.inf:
            out += [self.high + max(1.0, abs(self.high)), math.inf]
        return out


@dataclass(frozen=True)
class Int(Domain):
    """A whole number in [low, high]. A float slider may send 16.0: whole floats are taken
    (and stored as int), 2.5 is refused."""
    low: int = 0
    high: int = 2**31 - 1

    def check(self, value):
        if not _is_number(value) or (isinstance(value, float) and not value.is_integer()) \
                or not self.low <= value <= self.high:
            raise Invalid
        return int(value)

    def describe(self):
        return f"a whole number from {self.low} to {self.high}"

    def bad_values(self):
        return ["x", None, True, float("nan"), math.inf, self.low + 0.5, self.low - 1,
                self.high + 1]


@dataclass(frozen=True)
class Choice(Domain):
    """One of a few named options."""
    options: tuple

    def check(self, value):
        if isinstance(value, bool) or value not in self.options:
            raise Invalid
        return value

    def describe(self):
        return "one of " + ", ".join(map(repr, self.options))

    def bad_values(self):
        return [v for v in ("no-such-choice", 3, True) if v not in self.options]


@dataclass(frozen=True)
class Flag(Domain):
    def check(self, value):
        if not isinstance(value, bool):
            raise Invalid
        return value

    def describe(self):
        return "True or False"

    def bad_values(self):
        return ["yes", 2, None]


@dataclass(frozen=True)
class Name(Domain):
    """A module name of the network (checked against the model in ``check_model``)."""

    def check(self, value):
        if not isinstance(value, str):
            raise Invalid
        return value

    def describe(self):
        return "a layer name such as 'net.1'"

    def bad_values(self):
        return [5, None, ["net.1"]]


@dataclass(frozen=True)
class Optional(Domain):
    """None, or a value of ``inner``."""
    inner: Domain

    def check(self, value):
        return None if value is None else self.inner.check(value)

    def describe(self):
        return f"None or {self.inner.describe()}"

    def bad_values(self):
        return [v for v in self.inner.bad_values() if v is not None]


@dataclass(frozen=True)
class Seq(Domain):
    """A tuple (a list is taken) of ``min_len`` to ``max_len`` values of ``item``."""
    item: Domain
    min_len: int = 0
    max_len: int = 10**6

    def check(self, value):
        if isinstance(value, (str, bytes, dict)) or not isinstance(value, (tuple, list)) \
                or not self.min_len <= len(value) <= self.max_len:
            raise Invalid
        return tuple(self.item.check(v) for v in value)

    def describe(self):
        return (f"a tuple of {self.min_len} to {self.max_len} values, each "
                f"{self.item.describe()}")

    def bad_values(self):
        good = _example(self.item)
        out = ["x", 5, None, {"a": good}]
        out += [(bad,) * max(self.min_len, 1) for bad in self.item.bad_values()[:3]]
        if self.min_len > 0:
            out.append(())
        return out


@dataclass(frozen=True)
class Mapping(Domain):
    """A dict from layer names to values of ``value`` (names checked in ``check_model``)."""
    value: Domain

    def check(self, value):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise Invalid
        return {k: self.value.check(v) for k, v in value.items()}

    def describe(self):
        return f"a dict {{layer name: {self.value.describe()}}}"

    def bad_values(self):
        return [5, None, "x", {3: _example(self.value)}] + \
            [{"net.1": bad} for bad in self.value.bad_values()[:3]]


def _example(domain: Domain):
    """A value the domain accepts (to build bad containers around)."""
    if isinstance(domain, (Real, Int)):
        return domain.low if domain.low > -math.inf else 0
    if isinstance(domain, Choice):
        return domain.options[0]
    if isinstance(domain, Flag):
        return True
    if isinstance(domain, Optional):
        return None
    return "net.1"


def knob(default, domain: Domain, **kwargs):
    """A hyperparameter field with its domain (mutable defaults are copied per instance)."""
    metadata = {"domain": domain}
    if isinstance(default, (dict, list, set)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata,
                     **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


def domain_of(cls, name: str) -> Domain | None:
    """The domain of field ``name``: its own, or that of the same field in a base class (a
    subclass may redeclare ``epochs: int = 5`` to change only the default)."""
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and "domain" in f.metadata:
            return f.metadata["domain"]
    return None
