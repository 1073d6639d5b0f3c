"""NAS-Bench-Graph table from ``nas-bench-graph`` (``nas_bench_graph/light/*.bench``).

A design: 4 computing nodes, each applying one GNN op to the output of an earlier node (``link``:
the predecessor of each node, 0 = the input), from 9 link patterns; 9 ops (gat, gcn, gin, cheb,
sage, arma, graph, fc, skip). Each file maps the package's canonical hash of a design to
``valid_perf``, ``perf`` (test), ``latency`` (s) and ``para`` (M params). The canonical encoding is
that hash, computed by the package's own ``Arch.valid_hash``. Proteins has its own op subset
(gcn, sage, arma, fc, skip) and is the separate table ``nbgraph-proteins``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from nasmtl.nasbench.table import Table, load_table_pickle, require
from nasmtl.spaces.base import Prior, SpaceError, rng_decide, weighted_choice

DATASETS = ("cora", "citeseer", "pubmed", "cs", "physics", "photo", "computers", "arxiv")
LINKS = ((0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 1, 1), (0, 0, 1, 2), (0, 0, 1, 3),
         (0, 1, 1, 1), (0, 1, 1, 2), (0, 1, 2, 2), (0, 1, 2, 3))
OPS = ("gat", "gcn", "gin", "cheb", "sage", "arma", "graph", "fc", "skip")
PROTEINS_OPS = ("gcn", "sage", "arma", "fc", "skip")
METRICS = ("val_acc", "test_acc", "latency", "params")
DIRECTIONS = {"val_acc": "maximize", "test_acc": "maximize", "latency": "minimize", "params": "minimize"}


@dataclass(frozen=True)
class GraphDesign:
    """A NAS-Bench-Graph architecture: predecessor of each node and the op of each node."""

    link: tuple[int, ...]
    ops: tuple[str, ...]


@dataclass
class GraphSpace:
    """The NAS-Bench-Graph space as a nasmtl ``SearchSpace`` (encode = the table's key)."""

    ops: tuple[str, ...] = OPS
    name: str = "nbgraph"

    def _keys(self) -> list[tuple[str, list[str]]]:
        links = [",".join(map(str, lk)) for lk in LINKS]
        return [("link", links)] + [(f"op{i}", list(self.ops)) for i in range(4)]

    def _build(self, ch: dict[str, str]) -> GraphDesign:
        link = tuple(int(v) for v in ch["link"].split(","))
        return GraphDesign(link, tuple(ch[f"op{i}"] for i in range(4)))

    def sample(self, rng: np.random.Generator, prior: Prior | None = None) -> GraphDesign:
        """Draw a design (never all-skip, which the benchmark leaves out)."""
        decide = rng_decide(rng, prior)
        while True:
            ch = {k: decide(k, opts, [1.0] * len(opts)) for k, opts in self._keys()}
            x = self._build(ch)
            if set(x.ops) != {"skip"}:
                return x

    def mutate(self, x: GraphDesign, rng: np.random.Generator) -> GraphDesign:
        """Change the link pattern or one node's op to a design with another key."""
        ch, base = self.choices(x), self.encode(x)
        keys = self._keys()
        for _ in range(100):
            k, opts = keys[int(rng.integers(len(keys)))]
            new = dict(ch)
            new[k] = weighted_choice(rng, [o for o in opts if o != ch[k]], [1.0] * (len(opts) - 1))
            y = self._build(new)
            if set(y.ops) != {"skip"} and self.encode(y) != base:
                return y
        return x

    def crossover(self, a: GraphDesign, b: GraphDesign, rng: np.random.Generator) -> GraphDesign:
        """Uniform crossover over the five decisions."""
        ca, cb = self.choices(a), self.choices(b)
        for _ in range(100):
            y = self._build({k: (ca if rng.random() < 0.5 else cb)[k] for k, _ in self._keys()})
            if set(y.ops) != {"skip"}:
                return y
        return a

    def encode(self, x: GraphDesign) -> str:
        """The table key: the package's canonical hash of the design."""
        self._check(x)
        nbg = require("nas_bench_graph", "the NAS-Bench-Graph space")
        return str(nbg.Arch(list(x.link), list(x.ops)).valid_hash())

    def decode(self, s: str) -> GraphDesign:
        """The design of a table key (digits: link pattern, then one op index per node)."""
        if not s.isdigit() or len(s) > 5 or int(s) // 10_000 >= len(LINKS):
            raise SpaceError(f"not a NAS-Bench-Graph key: {s!r}")
        v = int(s)
        digits = [(v // 10 ** (3 - i)) % 10 for i in range(4)]
        if any(d >= len(OPS) for d in digits):
            raise SpaceError(f"not a NAS-Bench-Graph key: {s!r}")
        x = GraphDesign(LINKS[v // 10_000], tuple(OPS[d] for d in digits))
        self._check(x)
        return x

    def choices(self, x: GraphDesign) -> dict[str, str]:
        """``{"link": "0,0,1,2", "op0": "gcn", ...}``."""
        self._check(x)
        out = {"link": ",".join(map(str, x.link))}
        out.update({f"op{i}": op for i, op in enumerate(x.ops)})
        return out

    def size(self) -> float:
        """Raw designs (link patterns x ops, minus the all-skip ones)."""
        return float(len(LINKS) * (len(self.ops) ** 4 - 1))

    def _check(self, x: GraphDesign) -> None:
        if not isinstance(x, GraphDesign) or x.link not in LINKS or len(x.ops) != 4:
            raise SpaceError(f"space '{self.name}': not a design: {x!r}")
        bad = [o for o in x.ops if o not in self.ops]
        if bad:
            raise SpaceError(f"space '{self.name}': unknown op(s) {bad} (ops: {', '.join(self.ops)})")


def _light_dir() -> Path:
    mod = require("nas_bench_graph", "the NAS-Bench-Graph table")
    return Path(mod.__file__).resolve().parent / "light"


def _table(name: str, space: GraphSpace, datasets: Sequence[str]) -> Table[GraphDesign]:
    folder = _light_dir()
    keys: tuple[str, ...] = ()
    values = {}
    for ds in datasets:
        raw = load_table_pickle(folder / f"{ds}.bench")
        if not keys:
            keys = tuple(str(k) for k in sorted(raw))
        arr = np.full((len(keys), len(METRICS)), np.nan)
        for i, k in enumerate(keys):
            row = raw.get(int(k))
            if row is not None:
                arr[i] = [100.0 * float(row["valid_perf"]), 100.0 * float(row["perf"]),
                          float(row["latency"]), float(row["para"])]
        values[ds] = arr
    return Table(name=name, space=space, datasets=tuple(datasets), metrics=METRICS,
                 directions=dict(DIRECTIONS), keys=keys, values=values, key_of=space.encode,
                 design_of=space.decode, notes="nas-bench-graph: accuracies in % (the files hold fractions)")


@lru_cache(maxsize=None)
def nbgraph_table() -> Table[GraphDesign]:
    """NAS-Bench-Graph: 26,206 architectures x 8 data sets."""
    return _table("nbgraph", GraphSpace(), DATASETS)


@lru_cache(maxsize=None)
def nbgraph_proteins_table() -> Table[GraphDesign]:
    """NAS-Bench-Graph on ogbn-proteins: 2,021 architectures over its 5-op subset."""
    return _table("nbgraph-proteins", GraphSpace(PROTEINS_OPS, "nbgraph-proteins"), ("proteins",))
