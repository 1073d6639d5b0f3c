"""Quantization policy space: one precision per layer group of the exported model.

Layer groups follow the design's structure: group ``i`` is backbone stage ``i`` (every task
group's copy of it), and the task heads belong to the last group. A policy is applied to an
ONNX file by ``nasmtl.onnx.policy``; this module knows nothing of onnx or optuna.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nasmtl.spaces.base import Decide, Prior, SpaceError, read_space_file, rng_decide, weighted_choice

BASIC_PRECISIONS: tuple[str, ...] = ("fp32", "int8_static", "int8_dynamic", "int4_weight")
"""The precisions of ``nasmtl.onnx.quantize`` (same names), the default options of a ``QuantSpace``."""

COMPOSITE_PRECISIONS: dict[str, dict[str, str]] = {"int4_int8": {"MatMul": "int4_weight", "Gemm": "int4_weight",
                                                                 "Conv": "int8_static"}}
"""Precisions that depend on the op: ``int4_int8`` is weight-only int4 for MatMul/Gemm, int8 static for Conv."""

PRECISIONS: tuple[str, ...] = (*BASIC_PRECISIONS, *COMPOSITE_PRECISIONS)
"""Every precision a policy may name."""

DEFAULT_CALIBRATION_SAMPLES = 64
_OPTION_KEYS = {"weight", "calibration_samples"}


@dataclass(frozen=True)
class QuantPolicy:
    """The precision of each layer group, ``precisions[i]`` for group ``i``."""

    precisions: tuple[str, ...]

    def __post_init__(self) -> None:
        """Reject empty policies and unknown precisions where they are made."""
        if not self.precisions:
            raise SpaceError("a quantization policy needs at least one layer group")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise SpaceError(f"unknown precision(s) {', '.join(map(repr, bad))} (known: {', '.join(PRECISIONS)})")

    @classmethod
    def uniform(cls, precision: str, n_groups: int = 1) -> QuantPolicy:
        """Every group at ``precision`` (e.g. the all-int8 baseline)."""
        return cls((precision,) * max(int(n_groups), 1))

    @property
    def n_groups(self) -> int:
        """Number of layer groups."""
        return len(self.precisions)

    def precision(self, group: int) -> str:
        """Precision of ``group``; groups past the last share the last group's precision."""
        if group < 0:
            raise IndexError(f"layer group must be >= 0, got {group}")
        return self.precisions[min(group, len(self.precisions) - 1)]

    def __str__(self) -> str:
        """The canonical string, e.g. ``int8_static,fp32``."""
        return ",".join(self.precisions)


@dataclass
class QuantSpace:
    """Policies over ``n_groups`` layer groups drawn from ``options`` (sampling ``weights`` per option)."""

    n_groups: int
    options: tuple[str, ...] = BASIC_PRECISIONS
    weights: Mapping[str, float] | None = None
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES
    source: str = "<QuantSpace>"
    name: str = "quant"
    _weights: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Check groups, options, weights and calibration size; messages name the source."""
        where = self.source
        try:
            n = operator.index(self.n_groups)
        except TypeError:
            n = 0
        if isinstance(self.n_groups, bool) or n < 1:
            raise SpaceError(f"{where}: n_groups must be an integer >= 1, got {self.n_groups!r}")
        self.n_groups = n
        self.options = tuple(self.options)
        if not self.options:
            raise SpaceError(f"{where}: options: at least one precision is needed")
        bad = [o for o in self.options if o not in PRECISIONS]
        if bad:
            raise SpaceError(f"{where}: options: unknown precision(s) {', '.join(map(repr, bad))} "
                             f"(known: {', '.join(PRECISIONS)})")
        if len(set(self.options)) != len(self.options):
            raise SpaceError(f"{where}: options: a precision is listed twice: {list(self.options)}")
        w = dict(self.weights or {})
        unknown = [k for k in w if k not in self.options]
        if unknown:
            raise SpaceError(f"{where}: weights: {', '.join(map(repr, unknown))} not among the options "
                             f"({', '.join(self.options)})")
        ws = []
        for o in self.options:
            v = w.get(o, 1.0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise SpaceError(f"{where}: options.{o}.weight must be a finite number >= 0, got {v!r}")
            ws.append(float(v))
        if sum(ws) <= 0:
            raise SpaceError(f"{where}: options: at least one precision needs a positive weight")
        self._weights = tuple(ws)
        c = self.calibration_samples
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise SpaceError(f"{where}: options.int8_static.calibration_samples must be an integer >= 1, got {c!r}")

    # ---- loading ----------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path, n_groups: int) -> QuantSpace:
        """Read options, weights and calibration size from a TOML file (see ``search_spaces/quant.toml``)."""
        p, data = read_space_file(path, "quantization space")
        return _parse(data, str(p), n_groups)

    # ---- SearchSpace -------------------------------------------------------------------------

    @property
    def option_weights(self) -> dict[str, float]:
        """Sampling weight of each option."""
        return dict(zip(self.options, self._weights))

    def decision_keys(self) -> list[str]:
        """The decision keys of ``choices``: ``quant.g0`` ... ``quant.g{n-1}``."""
        return [f"quant.g{i}" for i in range(self.n_groups)]

    def sample_with(self, decide: Decide) -> QuantPolicy:
        """A policy built by asking ``decide`` once per layer group."""
        return QuantPolicy(tuple(decide(k, self.options, self._weights) for k in self.decision_keys()))

    def sample(self, rng: np.random.Generator, prior: Prior | None = None) -> QuantPolicy:
        """Draw a policy; ``prior`` reweights options per ``quant.g{i}`` key."""
        return self.sample_with(rng_decide(rng, prior))

    def mutate(self, x: QuantPolicy, rng: np.random.Generator) -> QuantPolicy:
        """Change the precision of one group (to an option of positive weight where there is one)."""
        self._check(x)
        if len(self.options) == 1:
            return x
        g = int(rng.integers(self.n_groups))
        alts = [(o, w) for o, w in zip(self.options, self._weights) if o != x.precisions[g]]
        if any(w > 0 for _, w in alts):
            new = weighted_choice(rng, [o for o, _ in alts], [w for _, w in alts])
        else:
            new = alts[int(rng.integers(len(alts)))][0]
        out = list(x.precisions)
        out[g] = new
        return QuantPolicy(tuple(out))

    def crossover(self, a: QuantPolicy, b: QuantPolicy, rng: np.random.Generator) -> QuantPolicy:
        """Uniform crossover: each group's precision from either parent."""
        self._check(a)
        self._check(b)
        pick = rng.random(self.n_groups) < 0.5
        return QuantPolicy(tuple(pa if k else pb for pa, pb, k in zip(a.precisions, b.precisions, pick)))

    def encode(self, x: QuantPolicy) -> str:
        """The canonical string: precisions by group, comma-separated."""
        self._check(x)
        return ",".join(x.precisions)

    def decode(self, s: str) -> QuantPolicy:
        """The policy of a canonical string; ``SpaceError`` if it is not one of this space."""
        if not isinstance(s, str):
            raise SpaceError(f"space '{self.name}': a policy string must be a str, got {type(s).__name__}")
        parts = [p.strip() for p in s.split(",")]
        if len(parts) != self.n_groups:
            raise SpaceError(f"space '{self.name}': expected {self.n_groups} comma-separated precision(s), "
                             f"got {len(parts)} in {s!r}")
        bad = [p for p in parts if p not in self.options]
        if bad:
            raise SpaceError(f"space '{self.name}': precision {bad[0]!r} in {s!r} is not an option "
                             f"({', '.join(self.options)})")
        return QuantPolicy(tuple(parts))

    def choices(self, x: QuantPolicy) -> dict[str, str]:
        """``{"quant.g0": "int8_static", ...}``."""
        self._check(x)
        return dict(zip(self.decision_keys(), x.precisions))

    def from_choices(self, ch: Mapping[str, str]) -> QuantPolicy:
        """The policy with these decisions (inverse of ``choices``)."""
        missing = [k for k in self.decision_keys() if k not in ch]
        if missing:
            raise SpaceError(f"space '{self.name}': decision(s) {', '.join(missing)} missing")
        return self.decode(",".join(str(ch[k]) for k in self.decision_keys()))

    def size(self) -> float:
        """``len(options) ** n_groups``."""
        return float(len(self.options) ** self.n_groups)

    def _check(self, x: Any) -> None:
        """Raise ``SpaceError`` unless ``x`` is a policy of this space."""
        if not isinstance(x, QuantPolicy):
            raise SpaceError(f"space '{self.name}': not a QuantPolicy: {x!r}")
        if x.n_groups != self.n_groups:
            raise SpaceError(f"space '{self.name}': policy {x} has {x.n_groups} group(s), the space {self.n_groups}")
        bad = [p for p in x.precisions if p not in self.options]
        if bad:
            raise SpaceError(f"space '{self.name}': precision {bad[0]!r} is not an option ({', '.join(self.options)})")


def _parse(data: Mapping[str, Any], path: str, n_groups: int) -> QuantSpace:
    """A QuantSpace from parsed TOML; every error names the file and the key."""
    known = {"name", "options"}
    extra = sorted(set(data) - known)
    if extra:
        raise SpaceError(f"{path}: unknown key '{extra[0]}' (known: {', '.join(sorted(known))})")
    name = data.get("name", "quant")
    if not isinstance(name, str) or not name:
        raise SpaceError(f"{path}: name must be a non-empty string")
    opts = data.get("options")
    if opts is None:
        raise SpaceError(f"{path}: missing table [options] (one [options.PRECISION] table per precision)")
    if not isinstance(opts, Mapping) or not opts:
        raise SpaceError(f"{path}: options must be a non-empty table of [options.PRECISION] tables")
    weights: dict[str, float] = {}
    calibration = DEFAULT_CALIBRATION_SAMPLES
    for prec, spec in opts.items():
        where = f"options.{prec}"
        if prec not in PRECISIONS:
            raise SpaceError(f"{path}: {where}: unknown precision (known: {', '.join(PRECISIONS)})")
        if not isinstance(spec, Mapping):
            raise SpaceError(f"{path}: {where}: expected a table like {{ weight = 1.0 }}")
        bad = sorted(set(spec) - _OPTION_KEYS)
        if bad:
            raise SpaceError(f"{path}: {where}.{bad[0]}: unknown key (known: {', '.join(sorted(_OPTION_KEYS))})")
        w = spec.get("weight", 1.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise SpaceError(f"{path}: {where}.weight: must be a finite number >= 0, got {w!r}")
        weights[prec] = float(w)
        if "calibration_samples" in spec:
            c = spec["calibration_samples"]
            if prec != "int8_static":
                raise SpaceError(f"{path}: {where}.calibration_samples: only int8_static is calibrated")
            if isinstance(c, bool) or not isinstance(c, int) or c < 1:
                raise SpaceError(f"{path}: {where}.calibration_samples: must be an integer >= 1, got {c!r}")
            calibration = c
    if sum(weights.values()) <= 0:
        raise SpaceError(f"{path}: options: at least one precision needs a positive weight")
    return QuantSpace(n_groups, tuple(weights), weights, calibration, source=path, name=name)

