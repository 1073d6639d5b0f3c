"""Grammar sampling speed: valid designs per second, thrown-away fraction, per-draw times, build+export.

Run: ``python bench/grammar_sampling.py [--draws 10000] [--grammar grammars/einspace.lark]``.
The baseline, measured in the same run, is naive rejection sampling: the same grammar walked with
the file's weights but without shape-aware filtering (every alternative allowed, each draw
replayed and kept only if it builds and fits the limits).

Like the ``nasmtl`` command, the bench freezes the start-up heap first (``freeze_startup_heap``:
torch's objects out of garbage collection); ``--no-freeze`` leaves it, to see the difference.
Full garbage collections that fall inside draws are counted and timed, since they are part of
what a draw costs. Drawn designs are kept as canonical strings, as a search stores them.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from nasmtl.spaces.base import SpaceError  # noqa: E402
from nasmtl.spaces.grammar import GrammarSpace  # noqa: E402
from nasmtl.spaces.grammar_walk import Derivation  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def naive_draw(space: GrammarSpace, rng: np.random.Generator, name: str, depth: int) -> Derivation | None:
    """One unfiltered top-down draw (weights only, depth cut by choosing a non-recursive option)."""
    rule = space.grammar.rules[name]
    w = np.array([a.weight for a in rule.alts], dtype=float)
    if depth <= 0:
        w = np.array([0.0 if a.recursive else a.weight for a in rule.alts])
        if w.sum() == 0:
            return None
    i = int(rng.choice(len(w), p=w / w.sum()))
    kids = []
    for h in rule.alts[i].holes:
        k = naive_draw(space, rng, h, depth - 1)
        if k is None:
            return None
        kids.append(k)
    return Derivation(name, i, tuple(kids))


def naive_sample(space: GrammarSpace, rng: np.random.Generator, max_tries: int = 10_000) -> tuple[Derivation, int]:
    """Rejection sampling: draw until a design builds and fits the limits; returns it and the tries."""
    for tries in range(1, max_tries + 1):
        x = naive_draw(space, rng, space.grammar.start, space.limits.max_depth * 2)
        if x is None:
            continue
        try:
            if space.fits_limits(x):
                return x, tries
        except SpaceError:
            continue
    raise RuntimeError("naive sampler found nothing")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grammar", default=str(ROOT / "grammars" / "einspace.lark"))
    ap.add_argument("--draws", type=int, default=10_000)
    ap.add_argument("--naive-seconds", type=float, default=30.0)
    ap.add_argument("--export", type=int, default=50, help="designs to build and export")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-freeze", action="store_true", help="leave the start-up heap in garbage collection")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not args.no_freeze:
        from nasmtl.cli import freeze_startup_heap

        freeze_startup_heap()

    space = GrammarSpace.from_file(args.grammar)
    print(f"grammar {args.grammar}, input {space.input_shape}, limits {space.limits}")
    rng = np.random.default_rng(args.seed)
    times: list[float] = []
    designs: list[str] = []
    kept = []
    pauses: list[float] = []
    started = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if info["generation"] == 2:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                pauses.append(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)
    t0 = time.perf_counter()
    for _ in range(args.draws):
        t = time.perf_counter()
        x = space.sample(rng)
        times.append(time.perf_counter() - t)
        designs.append(space.encode(x))
        if len(kept) < args.export:
            kept.append(x)
    total = time.perf_counter() - t0
    gc.callbacks.remove(on_gc)
    draw_total = sum(times)
    st = space.stats
    rate = args.draws / draw_total
    print(f"shape-aware sampler: {args.draws} valid designs in {draw_total:.1f} s of drawing = {rate:.0f} designs/s "
          f"({total:.1f} s with encoding the strings); "
          f"thrown away {st.thrown_away} of {st.thrown_away + st.designs} attempts "
          f"({100 * st.thrown_fraction:.2f}%), {st.retries} local retries")
    print(f"  per draw: median {1e3 * statistics.median(times):.2f} ms, "
          f"p99 {1e3 * sorted(times)[int(0.99 * len(times)) - 1]:.2f} ms, worst {1e3 * max(times):.1f} ms; "
          f"{len(set(designs))} distinct")
    print(f"  full garbage collections in the draw loop: {len(pauses)}"
          + (f", longest {1e3 * max(pauses):.1f} ms" if pauses else "")
          + ("" if args.no_freeze else " (start-up heap frozen)"))

    nrng = np.random.default_rng(args.seed)
    n_ok = tries = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.naive_seconds:
        _, k = naive_sample(space, nrng)
        n_ok += 1
        tries += k
    naive_total = time.perf_counter() - t0
    naive_rate = n_ok / naive_total
    print(f"naive rejection sampler (no shape filter): {n_ok} valid designs in {naive_total:.1f} s = "
          f"{naive_rate:.1f} designs/s; thrown away {tries - n_ok} of {tries} attempts "
          f"({100 * (tries - n_ok) / max(tries, 1):.1f}%)")
    print(f"ratio shape-aware / naive valid designs per second: {rate / max(naive_rate, 1e-9):.1f}x")

    from nasmtl.onnx import export_onnx

    heads = {"left": 10, "right": 10}
    secs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, x in enumerate(kept):
            t = time.perf_counter()
            from nasmtl.arch import to_torch
            from nasmtl.arch.lower import lower_patch_convs

            model = to_torch(lower_patch_convs(space.to_arch(x, heads=heads)), seed=0).eval()
            export_onnx(model, space.input_shape, Path(tmp) / f"{i}.onnx", list(heads))
            secs.append(time.perf_counter() - t)
    print(f"build + ONNX export: median {statistics.median(secs):.3f} s, mean {statistics.mean(secs):.3f} s, "
          f"worst {max(secs):.3f} s per design over {len(secs)} designs")


if __name__ == "__main__":
    main()
