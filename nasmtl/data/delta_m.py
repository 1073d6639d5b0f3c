"""Multi-task quality measures: Δm, the average relative gain of each task over a reference model.

``Δm = 100 / T * Σ_t s_t * (M_t - R_t) / |R_t|`` over the T tasks, where ``M_t`` is the model's
metric on task t, ``R_t`` the reference's (the all-shared layout of the same backbone, or a
single-task model), and ``s_t`` is +1 when higher is better and -1 when lower is better
(Maninis et al., 2019; Vandenhende et al., 2021). Positive Δm: better than the reference on
average, in percent.
"""

from __future__ import annotations

import math
from typing import Mapping

LOWER_IS_BETTER = ("mse", "mae", "loss", "error", "rmse")
"""Metric names (the part after ``task.``) that are minimised; every other metric is maximised."""


def metric_direction(name: str) -> str:
    """``"minimize"`` for an error-like metric name (``task.mse``), else ``"maximize"``."""
    return "minimize" if name.rsplit(".", 1)[-1] in LOWER_IS_BETTER else "maximize"


def delta_m(metrics: Mapping[str, float], reference: Mapping[str, float],
            directions: Mapping[str, str] | None = None) -> float:
    """Δm in percent over the metric names of ``reference`` (``directions``: name -> maximize/minimize)."""
    if not reference:
        raise ValueError("delta_m needs at least one reference metric")
    missing = [k for k in reference if k not in metrics]
    if missing:
        raise ValueError(f"delta_m: metric(s) {', '.join(missing)} missing (have: {', '.join(sorted(metrics))})")
    total = 0.0
    for name, ref in reference.items():
        ref, value = float(ref), float(metrics[name])
        if not (math.isfinite(ref) and math.isfinite(value)):
            raise ValueError(f"delta_m: metric {name} is not finite (model {value}, reference {ref})")
        if ref == 0.0:
            raise ValueError(f"delta_m: reference value of {name} is 0; relative gain undefined")
        d = (directions or {}).get(name) or metric_direction(name)
        if d not in ("maximize", "minimize"):
            raise ValueError(f"delta_m: direction of {name} must be 'maximize' or 'minimize', got {d!r}")
        sign = 1.0 if d == "maximize" else -1.0
        total += sign * (value - ref) / abs(ref)
    return 100.0 * total / len(reference)
