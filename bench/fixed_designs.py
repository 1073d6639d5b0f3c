"""Fixed designs of the default space against the hand CNN, each trained from scratch at the final budget.

Answers "does the family hold a design that beats the hand CNN in every seed?" apart from whether a
search finds it: each design (architecture string of ``grammars/convnet.lark`` and a layout) is built
as the search builds it, trained for ``--steps`` (default: the default run's final 600 steps) with the
default run's data and settings, and measured on the test split in fp32 (torch). Prints a row per
seed and design and the points each design gains over the hand CNN trained in the same process.

    python bench/fixed_designs.py [--seeds 0,1,2] [--steps 600] [--lr-schedule constant|cosine]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HAND_BLOCK = ("seq(conv(out={w},k=3),batchnorm,relu,maxpool(k=2,stride=2),conv(out={w},k=3),batchnorm,relu,"
              "seq(maxpool(k=2,stride=2),flatten,linear(out=128),relu))")
STEM = "seq(conv(out=32,k=3),batchnorm,relu,maxpool(k=2,stride=2))"
DESIGNS = {
    "hand CNN (two branches, 64 wide)": (f"seq({STEM},{HAND_BLOCK.format(w=64)})", "left+right/left|right"),
    "shared, 64 wide": (f"seq({STEM},{HAND_BLOCK.format(w=64)})", "left+right/left+right"),
    "shared, 96 wide": (f"seq({STEM},{HAND_BLOCK.format(w=96)})", "left+right/left+right"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the default run's [final])")
    ap.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant")
    args = ap.parse_args()

    from nasmtl.arch import arch_cost, to_torch
    from nasmtl.config import default_config
    from nasmtl.search.evaluate import load_data, load_space
    from nasmtl.spaces.joint import Design, build_network
    from nasmtl.train import Budget, TrainConfig, evaluate, train

    cfg = default_config()
    steps = args.steps or cfg.final.steps
    data = load_data(cfg)
    space = load_space(cfg, data)
    heads = {t.name: t.n_outputs for t in data.tasks}
    tasks = [t.name for t in data.tasks]
    print(f"{steps} steps, batch {cfg.train.batch_size}, lr {cfg.train.lr:g} ({args.lr_schedule}), test split "
          f"of {len(data.test)}", flush=True)
    wins = {name: 0 for name in DESIGNS}
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        scores: dict[str, dict[str, float]] = {}
        for name, (arch, layout) in DESIGNS.items():
            net = build_network(space, Design(space.arch_space.decode(arch), space.layout_space.decode(layout), None),
                                tuple(data.input_shape), heads, cfg.space.head)
            model = to_torch(net, seed=seed)
            t0 = time.perf_counter()
            train(model, data, TrainConfig(budget=Budget(steps=steps), batch_size=cfg.train.batch_size,
                                           lr=cfg.train.lr, seed=seed, lr_schedule=args.lr_schedule))
            m = evaluate(model, data.test, list(data.tasks))
            scores[name] = {t: m[t]["accuracy"] for t in tasks}
            cost = arch_cost(net)
            print(f"seed {seed}  {name:34s} " + "  ".join(f"{t} {scores[name][t]:.4f}" for t in tasks)
                  + f"  params {cost.params / 1e3:.1f}k  MACs {cost.macs / 1e6:.1f}M  ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
        hand = scores[next(iter(DESIGNS))]
        for name in list(DESIGNS)[1:]:
            gain = {t: 100 * (scores[name][t] - hand[t]) for t in tasks}
            wins[name] += all(g >= 0 for g in gain.values())
            print(f"seed {seed}  {name} vs hand CNN: " + ", ".join(f"{t} {g:+.2f} points" for t, g in gain.items()))
    for name in list(DESIGNS)[1:]:
        print(f"{name}: at least as good as the hand CNN on every task in {wins[name]} of {len(seeds)} seeds")


if __name__ == "__main__":
    main()
