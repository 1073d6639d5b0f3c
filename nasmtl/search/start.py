"""Start designs: hand-written designs (strings, or files holding one) that a fresh search trains first.

Seeding a search with known-good networks matters more in an expressive space than the sampler
does (einspace's evolution seeded with a ResNet beat evolution from scratch). An entry of
``[search] start`` is a design string of the space, or a file holding one (``#`` lines are
comments, line breaks are ignored), e.g. ``grammars/baselines/resnet.txt``. For a joint space an
architecture string is enough: where the layout is searched it starts twice, at the two ends of
the layout space (every stage shared by all tasks, and one branch per task from the first stage:
hard parameter sharing and one network per task, the two designs a multi-task practitioner tries
first), with one quantization policy drawn from the space for both.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from nasmtl.config import ConfigError
from nasmtl.errors import first_line


def read_entry(entry: str, resolve: Callable[[str], Path]) -> str:
    """The design string of one entry: the text of a file when ``entry`` names one, else ``entry``."""
    looks_like_file = "(" not in entry and ("/" in entry or entry.endswith(".txt"))
    path = resolve(entry) if looks_like_file else None
    if path is not None and path.is_file():
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        return "".join(ln for ln in lines if ln and not ln.startswith("#"))
    if looks_like_file:
        raise ConfigError(f"no start-design file {entry!r}")
    return entry


def _decode(space: Any, text: str, rng: np.random.Generator) -> list[Any]:
    """The designs of ``space`` that one entry starts: the full design it spells, or, for an
    architecture string of a joint space, that architecture at both ends of the layout space."""
    try:
        return [space.decode(text)]
    except Exception as whole:
        arch_space = getattr(space, "arch_space", None)
        if arch_space is None:
            raise whole
        arch = arch_space.decode(text)
        drawn = replace(space.sample(rng), arch=arch)
        if "layout" not in getattr(space, "searched", ()):
            return [drawn]
        ends = (space.layout_space.shared(), space.layout_space.separate())
        return [replace(drawn, layout=layout) for layout in ends]


def start_designs(space: Any, entries: Sequence[str], resolve: Callable[[str], Path], seed: int = 0,
                  source: str = "<config>") -> list[str]:
    """Canonical strings of the start designs; an entry that is not a design of the space is a ``ConfigError``."""
    rng = np.random.default_rng([seed, 7])
    out: list[str] = []
    for i, entry in enumerate(entries):
        where = f"{source}: search.start[{i}]"
        try:
            designs = _decode(space, read_entry(entry, resolve), rng)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        except Exception as e:
            raise ConfigError(f"{where}: not a design of space {space.name!r}: {first_line(e, None)}") from None
        for design in designs:
            _check_caps(getattr(space, "arch_space", space), getattr(design, "arch", design), where)
            key = space.encode(design)
            if key not in out:
                out.append(key)
    return out


def _check_caps(arch_space: Any, arch: Any, where: str) -> None:
    """A start design must keep the run's params and MACs caps (grammar depth limits bind sampling only)."""
    limits, info = getattr(arch_space, "limits", None), getattr(arch_space, "info", None)
    if limits is None or info is None:
        return
    cost = info(arch)
    for cap, value, key in ((limits.max_macs, cost.macs, "max_macs"), (limits.max_params, cost.params, "max_params")):
        if cap and value > cap:
            raise ConfigError(f"{where}: the design has {value:,} {key[4:]}, over the space's cap "
                              f"[space] {key} = {cap:,}")


def enqueue_start(study: Any, designs: Sequence[str]) -> None:
    """Enqueue designs (canonical strings) as the study's next trials; the engine decodes them."""
    for key in designs:
        study.enqueue_trial({}, user_attrs={"design": key})
