"""Zero-cost proxies: scores of an untrained torch model from one batch, usable as features or objectives.

* ``synflow`` (Tanaka et al. 2020): sum of |theta * dR/dtheta| with all weights made positive and an
  all-ones input, R the sum of the outputs (computed in float64, batch-norm in eval mode).
* ``naswot`` (Mellor et al. 2021): log-determinant of the Hamming-similarity kernel of the ReLU
  on/off codes of the batch's samples.
* ``grad_norm``: sum over weight tensors of the L2 norm of the loss gradient.
* ``snip`` (Lee et al. 2019): sum of |theta * dL/dtheta| over conv and linear weights.

A model may return a tensor or a dict of tensors (nasmtl's multi-task models); the loss is the
cross-entropy of each 2-D output against ``y`` when labels are given, else the mean square of
the outputs. The model given is never changed: every proxy works on a deep copy.
"""

from __future__ import annotations

import copy
from typing import Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

PROXIES = ("synflow", "naswot", "grad_norm", "snip")


def _outputs(out: torch.Tensor | Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(out, Mapping):
        return [out[k] for k in sorted(out)]
    if isinstance(out, (tuple, list)):
        return [o for o in out if isinstance(o, torch.Tensor)]
    return [out]


def _loss(out: torch.Tensor | Mapping[str, torch.Tensor], y: torch.Tensor | Mapping[str, torch.Tensor] | None) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64)
    names = sorted(out) if isinstance(out, Mapping) else None
    for i, o in enumerate(_outputs(out)):
        target = y[names[i]] if isinstance(y, Mapping) and names else y
        if target is not None and o.dim() == 2 and target.dtype in (torch.int64, torch.int32):
            total = total + F.cross_entropy(o, target.long())
        else:
            total = total + (o.float() ** 2).mean()
    return total


def _weights(model: nn.Module) -> list[tuple[nn.Module, nn.Parameter]]:
    return [(m, m.weight) for m in model.modules()
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and m.weight.requires_grad]


def synflow(model: nn.Module, x: torch.Tensor) -> float:
    """SynFlow score of ``model`` for inputs shaped like ``x``."""
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad()
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64)
    r = sum(o.sum() for o in _outputs(net(ones)))
    r.backward()
    return float(sum((p * p.grad).abs().sum().item() for p in net.parameters() if p.grad is not None))


def naswot(model: nn.Module, x: torch.Tensor) -> float:
    """NASWOT score: log|K| of the ReLU-code kernel over the batch ``x`` (NaN for a model without nn.ReLU)."""
    net = copy.deepcopy(model).eval()
    codes: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
        codes.append((out.detach().reshape(out.shape[0], -1) > 0).double())

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    if not codes:
        return float("nan")
    c = torch.cat(codes, dim=1)
    k = c @ c.T + (1 - c) @ (1 - c).T
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if sign > 0 else float("-inf")


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor | Mapping[str, torch.Tensor] | None = None) -> float:
    """Sum of the L2 norms of the loss gradient per conv/linear weight."""
    net = copy.deepcopy(model).train()
    net.zero_grad()
    _loss(net(x), y).backward()
    return float(sum(w.grad.norm().item() for _, w in _weights(net) if w.grad is not None))


def snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor | Mapping[str, torch.Tensor] | None = None) -> float:
    """SNIP saliency: sum of |theta * dL/dtheta| over conv and linear weights."""
    net = copy.deepcopy(model).train()
    net.zero_grad()
    _loss(net(x), y).backward()
    return float(sum((w * w.grad).abs().sum().item() for _, w in _weights(net) if w.grad is not None))


def zero_cost_proxies(model: nn.Module, x: torch.Tensor, y: torch.Tensor | Mapping[str, torch.Tensor] | None = None,
                      seed: int = 0) -> dict[str, float]:
    """All four proxies of ``model`` on the batch ``x`` (labels ``y`` optional), under a fixed torch seed."""
    torch.manual_seed(seed)
    out = {"synflow": synflow(model, x), "naswot": naswot(model, x), "grad_norm": grad_norm(model, x, y),
           "snip": snip(model, x, y)}
    return {k: (float(v) if np.isfinite(v) else float("nan")) for k, v in out.items()}
