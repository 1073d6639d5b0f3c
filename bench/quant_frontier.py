"""What the two-branch CNN's family can reach at all: chosen small members trained by hand, against the aims of bench/quant.py.

    python bench/quant_frontier.py [--steps 300] [--n-train 2000] [--n-eval 3000] [--seed 0]

``bench/quant.py`` asks whether a search finds a network that matches the hand design's accuracy
while being much smaller and faster. This script asks the question before it: does the family hold
such a network at this training budget? It trains the hand-designed two-branch CNN and a fixed list
of small family members (FAMILY sentences, both stages shared by the two tasks, the cheap corner of
the space: stride-2 stems, narrow blocks at 9x9) with exactly the budget of ``bench/quant.py``,
measures each in onnxruntime all fp32, all int8 static, and with the policies the joint search
favours on small networks (stem fp32, the rest int8 or int8 + 4-bit dense layers), re-measures all
latencies in one interleaved pass, and prints every model's test accuracy, bytes and latency as
ratios against the hand design all int8. Its last lines say which models meet the aims of
``bench/quant.py`` (4x smaller and 5x faster at no loss of test accuracy) and the best accuracy of
any model at least 5x faster: an upper bound on what a search of the same family and budget can show,
up to training noise (a search also profits from trying more networks than this list).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from nasmtl.arch import arch_cost
from nasmtl.spaces.grammar import GrammarSpace
from nasmtl.spaces.grammar_reader import load_grammar
from nasmtl.spaces.joint import Design, joint_from_parts
from nasmtl.spaces.quant import QuantPolicy
from quant import (FAMILY, HAND_STRINGS, INT8, Lab, Point, add_budget_arguments, hand_design, net_key, prepare,
                   remeasure)

STRIDE_STEM = "seq(conv(out={w},k=3,stride=2),batchnorm,relu)"
POOL_STEM = "seq(conv(out={w},k=3),batchnorm,relu,maxpool(k=2,stride=2))"
STRIDE_BLOCK = ("seq(conv(out={a},k={k},stride=2),batchnorm,relu,conv(out={b},k={k}),batchnorm,relu,"
                "seq(maxpool(k=2,stride=2),flatten))")
POOL_BLOCK = ("seq(conv(out={a},k=3),batchnorm,relu,maxpool(k=2,stride=2),conv(out={b},k=3),batchnorm,relu,"
              "seq(maxpool(k=2,stride=2),flatten))")
CANDIDATES = {
    "s8 | s16-32": (STRIDE_STEM.format(w=8), STRIDE_BLOCK.format(a=16, b=32, k=3)),
    "s16 | s32-32": (STRIDE_STEM.format(w=16), STRIDE_BLOCK.format(a=32, b=32, k=3)),
    "s16 | s32-64": (STRIDE_STEM.format(w=16), STRIDE_BLOCK.format(a=32, b=64, k=3)),
    "s16 | s32-32 k5": (STRIDE_STEM.format(w=16), STRIDE_BLOCK.format(a=32, b=32, k=5)),
    "s16 | s64-64": (STRIDE_STEM.format(w=16), STRIDE_BLOCK.format(a=64, b=64, k=3)),
    "s32 | s64-64": (STRIDE_STEM.format(w=32), STRIDE_BLOCK.format(a=64, b=64, k=3)),
    "s16 | p32-32": (STRIDE_STEM.format(w=16), POOL_BLOCK.format(a=32, b=32)),
    "p16 | p32-32": (POOL_STEM.format(w=16), POOL_BLOCK.format(a=32, b=32)),
}
"""Small family members by name (stem | block; s = stride-2 conv, p = conv then max pooling, then widths)."""
POLICIES = ("fp32,fp32", f"{INT8},{INT8}", f"fp32,{INT8}", "fp32,int4_int8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_budget_arguments(p)
    args = p.parse_args()
    t_start = time.perf_counter()
    data, cfg = prepare(args)
    tasks = [t.name for t in data.tasks]
    heads = {t.name: t.n_outputs for t in data.tasks}
    arch_space = GrammarSpace.from_grammar(load_grammar("<two-branch CNN family>", FAMILY), data.input_shape)
    space = joint_from_parts(arch_space, tasks, 2, None)
    shared = space.layout_space.make([[tasks], [tasks]])
    seed, hand = hand_design(space, data, "grid")
    designs = {"hand design, shared": Design(arch_space.decode(HAND_STRINGS[0]), shared, None)}
    designs.update({name: Design(arch_space.decode(f"seq({stem},{block})"), shared, None)
                    for name, (stem, block) in CANDIDATES.items()})
    print(f"MultiMNIST {len(data.train)} train / {len(data.val)} val / {len(data.test)} test; {args.steps} steps "
          f"(batch 32) per network; {len(designs) + 1} networks, {len(POLICIES)} policies each", flush=True)

    rows: list[tuple[str, int, Point]] = []
    with tempfile.TemporaryDirectory(prefix="nasmtl-bench-quant-frontier-") as tmp:
        lab = Lab(data, Path(tmp), cfg, args.latency_runs, 64, "grid")
        cnn = lab.net(net_key(space, seed) if seed is not None else "two-branch-cnn", hand)
        fp32, ref = (lab.measure("hand", "hand", cnn, QuantPolicy(tuple(policy.split(","))))
                     for policy in POLICIES[:2])
        rows += [("hand design (two branches)", arch_cost(hand).macs, pt) for pt in (fp32, ref)]
        for name, design in designs.items():
            arch = space.build(design, data.input_shape, heads, "grid")
            net = lab.net(net_key(space, design), arch)
            print(f"  {name}: {arch_cost(arch).macs / 1e6:.2f} M MACs, trained in {net.seconds:.0f} s", flush=True)
            for policy in POLICIES:
                rows.append((name, arch_cost(arch).macs,
                             lab.measure(name, space.encode(design), net, QuantPolicy(tuple(policy.split(","))))))
        remeasure([r[2] for r in rows], runs=args.latency_runs, rounds=3)

    print(f"\nagainst the hand design all int8: test {ref.test:.3f}, {ref.bytes / 1e3:.1f} kB, {ref.latency_ms:.3f} ms")
    print(f"  {'network':<28} {'M MACs':>6} {'policy, as applied':<34} {'test':>6} {'kB':>7} {'ms':>7} "
          f"{'smaller':>8} {'faster':>7}")
    for name, macs, pt in sorted(rows, key=lambda r: r[2].latency_ms):
        print(f"  {name:<28} {macs / 1e6:6.2f} {pt.applied:<34} {pt.test:6.3f} {pt.bytes / 1e3:7.1f} "
              f"{pt.latency_ms:7.3f} {ref.bytes / pt.bytes:7.2f}x {ref.latency_ms / pt.latency_ms:6.2f}x")
    meets = [(n, pt) for n, _, pt in rows
             if pt.test >= ref.test and ref.bytes >= 4 * pt.bytes and ref.latency_ms >= 5 * pt.latency_ms]
    fast = [(n, pt) for n, _, pt in rows if ref.latency_ms >= 5 * pt.latency_ms]
    small = [(n, pt) for n, _, pt in rows if ref.bytes >= 4 * pt.bytes]
    for label, group in (("4x smaller", small), ("5x faster", fast)):
        if group:
            n, pt = max(group, key=lambda r: r[1].test)
            print(f"best test accuracy at least {label} than the hand design all int8: {pt.test:.3f} "
                  f"({n}, {pt.applied}; hand design {ref.test:.3f}, {100 * (pt.test - ref.test):+.1f} points)")
        else:
            print(f"no model is at least {label} than the hand design all int8")
    print(f"models meeting both aims at no loss of test accuracy: "
          f"{', '.join(f'{n} [{pt.applied}]' for n, pt in meets) or 'none'}")
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
