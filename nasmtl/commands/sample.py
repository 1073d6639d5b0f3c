"""``nasmtl sample GRAMMAR -n N``: draw designs from a grammar file and show their size and cost."""

from __future__ import annotations

import argparse
import json

from nasmtl.resources import find_shipped
from nasmtl.spaces.base import SpaceError

NAME = "sample"
HELP = "sample architectures from a grammar file (strings, params, MACs, depth)"


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(v < 1 for v in shape):
        raise argparse.ArgumentTypeError(f"input shape must be positive integers like 1,36,36, got {text!r}")
    return shape


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("grammar", help="a grammar file, e.g. grammars/einspace.lark")
    p.add_argument("-n", type=int, default=5, help="number of designs (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input-shape", type=_shape, default=None,
                   help="input shape without batch, e.g. 1,36,36 (default: the grammar's //@ input)")
    p.add_argument("--max-depth", type=int, default=None, help="override the grammar's depth limit")
    p.add_argument("--max-nodes", type=int, default=None, help="override the grammar's node limit")
    p.add_argument("--max-params", type=int, default=None, help="parameter cap (0: none)")
    p.add_argument("--max-macs", type=int, default=None, help="MACs cap (0: none)")
    p.add_argument("--json", action="store_true", help="one JSON object per design")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from nasmtl.spaces.grammar import GrammarSpace

    if args.n < 1:
        raise SpaceError(f"-n must be at least 1, got {args.n}")
    space = GrammarSpace.from_file(find_shipped(args.grammar), args.input_shape, max_depth=args.max_depth,
                                   max_nodes=args.max_nodes, max_params=args.max_params,
                                   max_macs=args.max_macs)
    rng = np.random.default_rng(args.seed)
    for _ in range(args.n):
        x = space.sample(rng)
        info = space.info(x)
        design = space.encode(x)
        if args.json:
            print(json.dumps({"design": design, "params": info.params, "macs": info.macs,
                              "depth": info.depth, "nodes": info.nodes, "output_shape": list(info.out_shape)}))
        else:
            print(f"params {info.params:>9,}  MACs {info.macs:>12,}  depth {info.depth:>3}  {design}")
    if not args.json:
        st = space.stats
        print(f"# {st.designs} designs, {st.thrown_away} attempts thrown away "
              f"({100 * st.thrown_fraction:.2f}%), {st.retries} local retries")
    return 0
