"""Augmentation of training batches: a function ``(batch, generator) -> batch`` applied before each step.

``[train] augment = { shift = 2, noise = 0.05 }`` in a run config makes one from the built-ins below
(in that order); through the Python API any callable, such as a torchvision transform wrapped as
``lambda x, g: transform(x)``, can be given as ``TrainConfig(augment=...)``. Only training batches
are augmented; validation, test and exported models see the data as it is. The generator is
seeded from the run's seed, so augmented training stays deterministic on the CPU.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from nasmtl.data.dataset import DataError

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

__all__ = ["AUGMENTS", "Augment", "chain", "checked", "from_spec", "gaussian_noise", "shift"]


def shift(max_pixels: int) -> Augment:
    """Move each image by up to ``max_pixels`` in height and width (zeros fill the edge); images (N, C, H, W)."""
    k = int(max_pixels)

    def apply(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if x.dim() != 4 or k <= 0:
            return x
        n, _, h, w = x.shape
        pad = torch.nn.functional.pad(x, (k, k, k, k))
        dy = torch.randint(0, 2 * k + 1, (n,), generator=g).tolist()
        dx = torch.randint(0, 2 * k + 1, (n,), generator=g).tolist()
        return torch.stack([pad[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])

    return apply


def gaussian_noise(std: float) -> Augment:
    """Add zero-mean Gaussian noise of standard deviation ``std`` to every input value."""
    s = float(std)

    def apply(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return x + s * torch.randn(x.shape, generator=g).to(x.device, x.dtype)

    return apply


AUGMENTS: dict[str, Callable[[Any], Augment]] = {"shift": shift, "noise": gaussian_noise}
"""The built-in augmentations by config key (``[train] augment``)."""


def from_spec(spec: Mapping[str, Any] | None, where: str = "train.augment") -> Augment | None:
    """The augmentation of a config table (``{"shift": 2, "noise": 0.05}``), built-ins applied in order."""
    if not spec:
        return None
    steps = []
    for key, value in spec.items():
        if key not in AUGMENTS:
            raise DataError(f"{where}: unknown augmentation {key!r} (built-in: {', '.join(AUGMENTS)})")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise DataError(f"{where}.{key} must be a number >= 0, got {value!r}")
        steps.append(AUGMENTS[key](value))
    return chain(*steps)


def chain(*steps: Augment | None) -> Augment | None:
    """The steps applied in order (``None`` ones skipped); a lone step is returned as it is, none gives ``None``."""
    kept = [s for s in steps if s is not None]
    if len(kept) <= 1:
        return kept[0] if kept else None

    def apply(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        for step in kept:
            x = step(x, g)
        return x

    return apply


def checked(fn: Any, where: str) -> Augment | None:
    """``fn`` if it is ``None`` or callable, else a ``DataError`` naming ``where`` (e.g. ``run_search(augment=...)``)."""
    if fn is not None and not callable(fn):
        raise DataError(f"{where}: expected a function (batch, generator) -> batch, got {type(fn).__name__} {fn!r:.60}")
    return fn
