"""The op registry: each op declares its attributes, shape rule, cost rules and torch factory.

Adding an op is one `register(OpSpec(...))` call; the IR, the torch builder, the grammar
sampler and the cost model all read the registry and know nothing op-specific.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch.nn as nn

from nasmtl.errors import NasmtlError

Shape = tuple[int, ...]
"""A tensor shape without the batch dimension: (C, H, W) image, (N, D) tokens, (D,) vector."""


class ShapeError(NasmtlError, ValueError):
    """Shapes that cannot fit: raised by shape rules and re-raised naming the node."""


class OpError(NasmtlError, ValueError):
    """An unknown op, or attributes an op does not accept."""


ShapeRule = Callable[[Sequence[Shape], Mapping[str, Any]], Shape]
CostRule = Callable[[Sequence[Shape], Shape, Mapping[str, Any]], int]
TorchFactory = Callable[[Sequence[Shape], Shape, Mapping[str, Any]], nn.Module]


def _zero(in_shapes: Sequence[Shape], out: Shape, attrs: Mapping[str, Any]) -> int:
    return 0


@dataclass(frozen=True)
class OpSpec:
    """Everything the platform needs to know about one op."""

    name: str
    shape: ShapeRule
    torch: TorchFactory
    attrs: Mapping[str, Any] = field(default_factory=dict)
    """Accepted attributes and their defaults (``REQUIRED`` for mandatory ones)."""
    arity: tuple[int, int | None] = (1, 1)
    """Minimum and maximum number of inputs (``None``: unbounded)."""
    params: CostRule = _zero
    macs: CostRule = _zero
    doc: str = ""

    def resolve(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Fill defaults and reject unknown or missing attributes."""
        unknown = sorted(set(attrs) - set(self.attrs))
        if unknown:
            raise OpError(f"op '{self.name}' has no attribute(s) {', '.join(unknown)}; "
                          f"it accepts: {', '.join(self.attrs) or 'none'}")
        out = dict(self.attrs)
        out.update(attrs)
        missing = [k for k, v in out.items() if v is REQUIRED]
        if missing:
            raise OpError(f"op '{self.name}' needs attribute(s) {', '.join(missing)}")
        return out

    def check_arity(self, n: int) -> None:
        lo, hi = self.arity
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo}..{hi if hi is not None else 'n'}"
            raise ShapeError(f"op '{self.name}' takes {want} input(s), got {n}")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Marker for an attribute without a default."""

_REGISTRY: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    """Add an op to the registry (replacing one of the same name)."""
    _REGISTRY[spec.name] = spec
    return spec


def get_op(name: str) -> OpSpec:
    """Look an op up by name, with a helpful error for unknown names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise OpError(f"unknown op '{name}'{hint}") from None


def has_op(name: str) -> bool:
    """True when ``name`` is a registered op."""
    return name in _REGISTRY


def op_names() -> list[str]:
    """Names of all registered ops, sorted."""
    return sorted(_REGISTRY)
