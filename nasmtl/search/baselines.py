"""Baselines of a run: hand designs trained with the finalists' budget, so the report can say whether the search beat them.

An entry of ``[search] baselines`` is one of:

- ``"auto"``: the usual hand designs for the data: image inputs get the two-branch CNN of
  ``nasmtl.examples`` and the ResNet-, ViT- and Mixer-like strings of ``grammars/baselines/``;
  vector inputs get the shared MLP;
- a built-in name (``nasmtl.examples.BUILTIN_BASELINES``: ``two-branch-cnn``, ``shared-mlp``);
- a design file or string. A file may name the grammar its design is written in on a comment
  line ``# grammar: PATH`` (relative to the file); otherwise the design is one of the run's space.
  A design of another grammar is built with all stages shared; a design of the run's own space
  with its layout and quantization parts as written, or all shared in fp32 when they are left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from nasmtl.config import ConfigError
from nasmtl.errors import first_line

AUTO_IMAGE = ("two-branch-cnn", "grammars/baselines/resnet.txt", "grammars/baselines/vit.txt",
              "grammars/baselines/mixer.txt")
AUTO_VECTOR = ("shared-mlp",)
_GRAMMAR_LINE = re.compile(r"^#\s*grammar:\s*(\S+)\s*$")


@dataclass
class Candidate:
    """A network to train at the final budget: a found design or a baseline."""

    name: str
    kind: str
    """``found`` or ``baseline``."""
    arch: Any
    policy: Any = None
    design: str = ""
    trial: int | None = None
    search: dict[str, float] | None = None
    """The trial's values in the search (validation, at the fidelity it stopped at)."""
    source: str = ""
    """Where a baseline came from (built-in name, file)."""


def baseline_entries(entries: Sequence[str], input_shape: Sequence[int]) -> list[tuple[str, bool]]:
    """``(entry, optional)`` pairs with ``auto`` expanded; an optional one that cannot build is left out."""
    out: list[tuple[str, bool]] = []
    for e in entries:
        if e == "auto":
            out += [(a, True) for a in (AUTO_IMAGE if len(input_shape) == 3 else AUTO_VECTOR)]
        else:
            out.append((e, False))
    seen: set[str] = set()
    return [(e, opt) for e, opt in out if not (e in seen or seen.add(e))]


def _read_design_file(entry: str, resolve: Callable[[str], Path]) -> tuple[str, Path | None, Path | None]:
    """(design text, the file, the grammar it names) of a file entry; (entry, None, None) for a string."""
    looks_like_file = "(" not in entry and ("/" in entry or entry.endswith(".txt"))
    if not looks_like_file:
        return entry, None, None
    path = resolve(entry)
    if not path.is_file():
        raise ConfigError(f"no baseline design file {entry!r} (looked in {path.parent})")
    grammar = None
    lines = []
    for ln in path.read_text(encoding="utf-8").splitlines():
        ln = ln.strip()
        m = _GRAMMAR_LINE.match(ln)
        if m:
            grammar = (path.parent / m.group(1)).resolve()
        elif ln and not ln.startswith("#"):
            lines.append(ln)
    return "".join(lines), path, grammar


def _other_grammar(text: str, grammar: Path, data: Any, head_pool: str) -> Any:
    """A design of another grammar file, all stages shared, one head per task."""
    from nasmtl.arch.compose import compose, shared_layout
    from nasmtl.arch.lower import lower_patch_convs
    from nasmtl.spaces.grammar import GrammarSpace

    space = GrammarSpace.from_file(grammar, tuple(data.input_shape))
    stages = space.stages(space.decode(text), tuple(data.input_shape))
    heads = {t.name: t.n_outputs for t in data.tasks}
    return lower_patch_convs(compose(stages, shared_layout(list(heads), len(stages)), heads, head_pool))


def _own_space(text: str, space: Any, build: Callable[[Any], Any]) -> tuple[Any, Any, str]:
    """(arch, policy, canonical string) of a design of the run's space; a bare architecture is all shared, fp32."""
    from dataclasses import replace

    try:
        design = space.decode(text)
    except Exception as whole:
        arch_space = getattr(space, "arch_space", None)
        if arch_space is None:
            raise whole
        design = replace(_shared_fp32(space), arch=arch_space.decode(text))
    return build(design), getattr(design, "quant", None), space.encode(design)


def _shared_fp32(space: Any) -> Any:
    """A design of a joint space with every stage shared and every group in fp32 (its arch part a placeholder)."""
    from dataclasses import replace

    import numpy as np

    from nasmtl.spaces.quant import QuantPolicy

    d = space.sample(np.random.default_rng(0))
    d = replace(d, layout=space.fixed.get("layout", space.layout_space.shared()))
    if d.quant is not None:
        d = replace(d, quant=space.fixed.get("quant", QuantPolicy.uniform("fp32", space.n_stages)))
    return d


def baseline_candidates(entries: Sequence[str], data: Any, space: Any, build: Callable[[Any], Any],
                        resolve: Callable[[str], Path], head_pool: str = "global",
                        source: str = "<config>") -> list[Candidate]:
    """The run's baselines as networks for ``data``; a bad explicit entry is a ``ConfigError`` naming it."""
    from nasmtl.examples import BUILTIN_BASELINES

    heads = {t.name: t.n_outputs for t in data.tasks}
    out: list[Candidate] = []
    for i, (entry, optional) in enumerate(baseline_entries(entries, tuple(data.input_shape))):
        where = f"{source}: search.baselines[{i}] ({entry!r})"
        try:
            if entry in BUILTIN_BASELINES:
                arch = BUILTIN_BASELINES[entry](tuple(data.input_shape), heads)
                out.append(Candidate(entry, "baseline", arch, None, entry, source=f"built-in {entry}"))
                continue
            text, path, grammar = _read_design_file(entry, resolve)
            name = path.stem.replace("_", "-") if path is not None else f"design-{len(out)}"
            if grammar is not None and grammar != _space_grammar(space):
                arch, policy, design = _other_grammar(text, grammar, data, head_pool), None, text
            else:
                arch, policy, design = _own_space(text, space, build)
            out.append(Candidate(name, "baseline", arch, policy, design, source=str(path or "string")))
        except ConfigError as e:
            if not optional:
                raise ConfigError(f"{where}: {e}") from None
        except Exception as e:
            if not optional:
                raise ConfigError(f"{where}: does not build for data {data.name!r}: {first_line(e, None)}") from None
    names = [c.name for c in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{source}: search.baselines: two baselines are named {', '.join(dup)}")
    return out


def _space_grammar(space: Any) -> Path | None:
    """The grammar file of a run's architecture space (``None`` for a cell space)."""
    arch_space = getattr(space, "arch_space", space)
    path = getattr(getattr(arch_space, "grammar", None), "path", None)
    return Path(path).resolve() if path else None
