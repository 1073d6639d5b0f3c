"""Joint architecture × layout × quantization search against fully-int8 baselines on MultiMNIST (onnxruntime).

    python bench/quant.py [--trainings 24] [--policies 6] [--steps 300] [--n-train 2000] [--n-eval 3000] [--seed 0]

Three ways to a small, fast two-task model, every model trained with the same budget:

(a) the hand-designed two-branch CNN (``nasmtl.examples``), quantized all to int8 static;
(b) architecture (and layout) search in fp32, its fp32 Pareto front then quantized all to int8 static;
(c) the joint search over architecture × layout × quantization policy (``search_spaces/quant.toml``,
    one precision per stage, heads with the last), with the same number of trained networks as (b);
    a policy is applied after training, so trying another policy on a trained network costs a
    quantization and a measurement, not a training.

Both searches use the same architecture space: by default FAMILY (``grammars/convnet.lark``), the grammar of the
two-branch CNN's family (stem and block widths, kernel sizes, pooling, strides, a block ending in
global pooling, a flattened grid or a dense neck; the hand design is one of its sentences), or any
grammar file given with ``--grammar`` (e.g. ``grammars/cnn.lark``), and the same layouts (which
stages the two tasks share). Task heads on an image map pool to a 2x2 grid (``--head-pool``), so a
head still tells the left digit from the right one.
Both are the same small evolution: the same start (the hand design when it is a sentence of the
space, then random designs; the joint search gives each a random policy), then mutants of
non-dominated members on validation mean accuracy, bytes and latency (the more accurate of two
drawn at random). Every figure is measured in onnxruntime: accuracy on
the validation split (selection) and on the test split (reported), file bytes, and latency at batch
1, one thread, median of repeated runs, re-measured for all front members in one interleaved pass.
Every measured file, baselines included, is first compacted (``nasmtl.onnx.compact_onnx``: names,
shapes and doc strings dropped), so bytes count weights and graph rather than debug names.
Printed: the fronts (test mean accuracy vs bytes and vs latency), each joint member beside the fp32
and all-int8 versions of its own trained network, and at the best accuracy each baseline reaches the
ratios of bytes and latency between the joint front and it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from nasmtl.arch import arch_cost, to_torch
from nasmtl.arch.ir import HEAD_POOLS, Arch
from nasmtl.data import MultiTaskDataset, multimnist
from nasmtl.examples import two_branch_cnn
from nasmtl.onnx import check_parity, compact_onnx, export_onnx, measure_latency
from nasmtl.onnx.policy import QuantApplied, apply_policy, evaluate_onnx, mean_primary
from nasmtl.spaces.grammar import GrammarSpace
from nasmtl.spaces.grammar_reader import load_grammar
from nasmtl.spaces.joint import Design, JointSpace, joint_from_parts
from nasmtl.spaces.quant import QuantPolicy, QuantSpace
from nasmtl.train import Budget, TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
INT8 = "int8_static"
MAX_MACS = 20_000_000
HAND_STRINGS = (
    "seq(seq(conv(out=32,k=3),batchnorm,relu,maxpool(k=2,stride=2)),seq(conv(out=64,k=3),batchnorm,relu,"
    "maxpool(k=2,stride=2),conv(out=64,k=3),batchnorm,relu,seq(maxpool(k=2,stride=2),flatten,linear(out=128),relu)))",
    "seq(seq(conv(out=32,k=3),batchnorm,relu,maxpool(k=2,stride=2)),seq(conv(out=64,k=3),batchnorm,relu,"
    "maxpool(k=2,stride=2),conv(out=64,k=3),batchnorm,relu,identity))",
)
"""The hand-designed CNN written in FAMILY (with and without the dense neck of ``nasmtl.examples``)."""
FAMILY = (ROOT / "grammars" / "convnet.lark").read_text(encoding="utf-8")
"""The grammar of the two-branch CNN's family, as shipped (``grammars/convnet.lark``)."""


@dataclass
class Point:
    """One measured ONNX model."""

    method: str
    design: str
    net: str
    policy: str
    applied: str
    val: float
    test: float
    bytes: float
    latency_ms: float
    path: Path


@dataclass
class Net:
    """One trained network: its fp32 file and architecture costs."""

    key: str
    fp32: Path
    params: int
    macs: int
    seconds: float


@dataclass
class Lab:
    """Trains networks once (by key), applies policies and measures files."""

    data: MultiTaskDataset
    folder: Path
    train_cfg: TrainConfig
    latency_runs: int
    calibration_samples: int
    head_pool: str = "grid"
    nets: dict[str, Net] = field(default_factory=dict)
    measured: dict[tuple[str, str], Point] = field(default_factory=dict)
    effective: dict[tuple[str, str], Point] = field(default_factory=dict)
    train_seconds: float = 0.0

    def net(self, key: str, arch: Arch) -> Net:
        """The trained network of ``key`` (trained and exported on first use)."""
        if key not in self.nets:
            t0 = time.perf_counter()
            model = to_torch(arch, seed=self.train_cfg.seed)
            train(model, self.data, self.train_cfg)
            model.eval()
            path = self.folder / f"net{len(self.nets)}.onnx"
            names = [t.name for t in self.data.tasks]
            export_onnx(model, self.data.input_shape, path, names)
            check_parity(model, path, self.data.val.x[:64], atol=1e-3)
            cost = arch_cost(arch)
            self.nets[key] = Net(key, path, cost.params, cost.macs, time.perf_counter() - t0)
            self.train_seconds += self.nets[key].seconds
        return self.nets[key]

    def measure(self, method: str, design: str, net: Net, policy: QuantPolicy) -> Point:
        """Apply ``policy`` to ``net`` and measure its compacted file (``compact_onnx``); policies that change the
        same nodes share one measurement."""
        cached = self.measured.get((net.key, str(policy)))
        if cached is None:
            if set(policy.precisions) == {"fp32"}:
                src, applied = net.fp32, str(policy)
            else:
                src = self.folder / f"{net.fp32.stem}.q{len(self.measured)}.onnx"
                applied = effective(apply_policy(net.fp32, src, policy, self.data.train.x, self.calibration_samples))
            cached = self.effective.get((net.key, applied))
            if cached is None:
                path = src.with_name(f"{src.stem}.min.onnx")
                compact_onnx(src, path)
                val = mean_primary(evaluate_onnx(path, self.data, "val"), self.data.tasks)
                test = mean_primary(evaluate_onnx(path, self.data, "test"), self.data.tasks)
                lat = measure_latency(path, runs=self.latency_runs, warmup=5).median_ms
                cached = Point("", "", net.key, str(policy), applied, val, test, float(path.stat().st_size), lat, path)
                self.effective[(net.key, applied)] = cached
            self.measured[(net.key, str(policy))] = cached
        return Point(method, design, net.key, str(policy), cached.applied, cached.val, cached.test, cached.bytes,
                     cached.latency_ms, cached.path)


def effective(q: QuantApplied) -> str:
    """The precisions a policy really gave, per group (``+`` where a group's nodes differ), e.g. ``fp32,int8_static``."""
    per = [sorted({q.applied.get(n, "fp32") for n, g in q.groups.items() if g == i}) for i in range(q.policy.n_groups)]
    return ",".join("+".join(p) or "-" for p in per)


def hand_design(space: JointSpace, data: MultiTaskDataset, head_pool: str) -> tuple[Design | None, Arch]:
    """The hand-designed two-branch CNN and, if one of HAND_STRINGS builds the same network, its design."""
    heads = {t.name: t.n_outputs for t in data.tasks}
    hand = two_branch_cnn(data.input_shape, heads)
    tasks = [t.name for t in data.tasks]
    layout = space.layout_space.make([[tasks], [[t] for t in tasks]])
    for text in HAND_STRINGS:
        try:
            d = Design(space.arch_space.decode(text), layout, None)
            built = space.build(d, data.input_shape, heads, head_pool)
        except Exception:
            continue
        if arch_cost(built) == arch_cost(hand) and ops_of(built) == ops_of(hand):
            return d, hand
    return None, hand


def ops_of(arch: Arch) -> Counter:
    """The multiset of (op, attributes) of an architecture."""
    return Counter((arch.graph.nodes[n]["op"], repr(sorted(arch.graph.nodes[n]["attrs"].items())))
                   for n in arch.op_nodes())


def net_key(space: JointSpace, design: Design) -> str:
    """The canonical string of a design without its quantization part (what training depends on)."""
    return space.encode(design).split(";quant=")[0]


def policy_of(design: Design) -> QuantPolicy | None:
    """The design's quantization policy (``None`` for an fp32 search)."""
    return design.quant


def with_policy(design: Design, policy: QuantPolicy) -> Design:
    """The same design with another policy."""
    return replace(design, quant=policy)


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` no worse everywhere and better somewhere (all objectives minimised)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def front(points: list[Point], cost: str, score: str = "val") -> list[Point]:
    """Non-dominated points on (accuracy ``score`` up, ``cost`` down), by ascending cost."""
    objs = [(-getattr(p, score), getattr(p, cost)) for p in points]
    keep = [p for p, o in zip(points, objs) if not any(dominates(q, o) for q in objs)]
    seen, out = set(), []
    for p in sorted(keep, key=lambda p: (getattr(p, cost), -getattr(p, score))):
        if (p.net, p.applied) not in seen:
            seen.add((p.net, p.applied))
            out.append(p)
    return out


def search(lab: Lab, space: JointSpace, method: str, trainings: int, evals: int, rng: np.random.Generator,
           start: list[Design]) -> tuple[list[Point], list[Design]]:
    """Evolution on (val accuracy, bytes, latency) from the designs ``start``: ``trainings`` trained networks,
    at most ``evals`` models. A joint search measures each newly trained network also all fp32 and all int8
    (cheap: no training), so a network is judged by more than one random policy. Returns the measured
    points and the designs in the order evaluated."""
    heads = {t.name: t.n_outputs for t in lab.data.tasks}
    points: dict[str, Point] = {}
    designs: dict[str, Design] = {}
    trained: set[str] = set()
    pending = list(start)
    misses = 0
    while len(points) < evals and misses < 200:
        if pending:
            d = pending.pop(0)
        else:
            objs = {k: (-p.val, p.bytes, p.latency_ms) for k, p in points.items()}
            best = [k for k, o in objs.items() if not any(dominates(q, o) for q in objs.values())]
            pair = [best[int(rng.integers(len(best)))] for _ in range(2)]
            parent = designs[max(pair, key=lambda k: points[k].val)]
            if len(trained) >= trainings and policy_of(parent) is not None:
                d = with_policy(parent, space.quant_space.mutate(policy_of(parent), rng))
            else:
                d = space.mutate(parent, rng)
        key, nk = space.encode(d), net_key(space, d)
        if key in points or (nk not in trained and len(trained) >= trainings):
            misses += 1
            continue
        try:
            arch = space.build(d, lab.data.input_shape, heads, lab.head_pool)
        except Exception:
            misses += 1
            continue
        if arch_cost(arch).macs > MAX_MACS:
            misses += 1
            continue
        net = lab.net(nk, arch)
        if nk not in trained and policy_of(d) is not None:
            pending[:0] = [with_policy(d, QuantPolicy.uniform(q, space.n_stages)) for q in ("fp32", INT8)]
        trained.add(nk)
        policy = policy_of(d) or QuantPolicy.uniform("fp32", space.n_stages)
        points[key] = lab.measure(method, key, net, policy)
        designs[key] = d
        p = points[key]
        print(f"  {method} {len(points):3d} nets {len(trained):2d}: val {p.val:.3f} test {p.test:.3f} "
              f"{p.bytes / 1e3:7.1f} kB {p.latency_ms:6.3f} ms  {policy}", flush=True)
        if len(trained) >= trainings and policy_of(d) is None:
            break
    return list(points.values()), [designs[k] for k in points]


def remeasure(points: list[Point], runs: int, rounds: int) -> None:
    """Latency of all points again, interleaved over ``rounds`` passes (the median of the pass medians)."""
    paths = sorted({p.path for p in points})
    got: dict[Path, list[float]] = {p: [] for p in paths}
    for _ in range(rounds):
        for path in paths:
            got[path].append(measure_latency(path, runs=runs, warmup=5).median_ms)
    for p in points:
        p.latency_ms = float(np.median(got[p.path]))


def ratios(ours: list[Point], ref: Point, tolerance: float) -> tuple[str, list[Point]]:
    """Bytes and latency of ``ref`` over the smallest / fastest of ``ours`` at test accuracy >= ref's - tolerance,
    and those two members."""
    ok = [p for p in ours if p.test >= ref.test - tolerance - 1e-12]
    if not ok:
        best = max(p.test for p in ours)
        return f"no joint front member reaches test {ref.test - tolerance:.3f} (best {best:.3f})", []
    small = min(ok, key=lambda p: p.bytes)
    fast = min(ok, key=lambda p: p.latency_ms)
    return (f"{ref.bytes / small.bytes:5.2f}x smaller ({small.bytes / 1e3:.1f} kB, test {small.test:.3f}, "
            f"val {small.val:.3f}), {ref.latency_ms / fast.latency_ms:5.2f}x faster ({fast.latency_ms:.3f} ms, "
            f"test {fast.test:.3f}, val {fast.val:.3f})"), [small, fast]


def show(title: str, points: list[Point], lab: Lab | None = None, same_net: tuple[str, str] | None = None) -> None:
    """A table of points; with ``lab`` and ``same_net`` (fp32 and all-int8 policy strings) also those versions."""
    print(f"\n{title}")
    head = f"  {'test acc':>8} {'val acc':>8} {'kB':>8} {'ms':>7}  {'precision per group, as applied':<40}"
    print(head + ("  | same net: fp32 acc/kB/ms, int8 acc/kB/ms" if same_net else ""))
    for p in points:
        label = p.applied if p.applied == p.policy else f"{p.applied} (asked {p.policy})"
        line = f"  {p.test:8.3f} {p.val:8.3f} {p.bytes / 1e3:8.1f} {p.latency_ms:7.3f}  {label:<40}"
        if lab is not None and same_net is not None:
            f, i = (lab.measured[(p.net, s)] for s in same_net)
            line += (f"  | {f.test:.3f}/{f.bytes / 1e3:.1f}/{f.latency_ms:.3f}, "
                     f"{i.test:.3f}/{i.bytes / 1e3:.1f}/{i.latency_ms:.3f}")
        print(line)


def add_budget_arguments(p: argparse.ArgumentParser) -> None:
    """The training and evaluation budget every quantization bench takes, with the same defaults."""
    p.add_argument("--steps", type=int, default=300, help="training steps of every network (batch 32)")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-eval", type=int, default=3000,
                   help="validation and test examples each (3000: about ±0.4 points of sampling noise; 1000: ±0.7)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latency-runs", type=int, default=30)


def prepare(args: argparse.Namespace) -> tuple[MultiTaskDataset, TrainConfig]:
    """MultiMNIST splits and training config of a run; one torch thread, as latencies are measured on one."""
    torch.set_num_threads(1)
    data = multimnist(seed=args.seed, n_train=args.n_train, n_val=args.n_eval, n_test=args.n_eval)
    return data, TrainConfig(budget=Budget(steps=args.steps), batch_size=32, lr=2e-3, seed=args.seed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trainings", type=int, default=24, help="trained networks per search (default 24)")
    p.add_argument("--policies", type=int, default=6, help="joint search evaluations per trained network (default 6)")
    add_budget_arguments(p)
    p.add_argument("--grammar", type=Path, default=None, help="architecture grammar (default: the CNN family)")
    p.add_argument("--head-pool", choices=HEAD_POOLS, default="grid",
                   help="how task heads reduce an image map (default grid: a head still sees left from right)")
    args = p.parse_args()
    t_start = time.perf_counter()
    data, cfg = prepare(args)
    tasks = [t.name for t in data.tasks]
    if args.grammar is None:
        arch_space = GrammarSpace.from_grammar(load_grammar("<two-branch CNN family>", FAMILY), data.input_shape)
    else:
        arch_space = GrammarSpace.from_file(args.grammar, data.input_shape, max_macs=MAX_MACS // 2)
    rng = np.random.default_rng(args.seed)
    n_stages = max(len(arch_space.stages(arch_space.sample(rng), data.input_shape)) for _ in range(8))
    quant = QuantSpace.from_file(ROOT / "search_spaces" / "quant.toml", n_stages)
    fp32_space = joint_from_parts(arch_space, tasks, n_stages, None)
    joint_space = joint_from_parts(arch_space, tasks, n_stages, quant)
    seed, hand = hand_design(fp32_space, data, args.head_pool)
    print(f"MultiMNIST {len(data.train)} train / {len(data.val)} val / {len(data.test)} test; {args.steps} steps "
          f"(batch 32) per network; space {getattr(joint_space, 'name', type(joint_space).__name__)}, {n_stages} stages; "
          f"{args.trainings} trained networks per search", flush=True)
    if seed is not None:
        print(f"the hand design is a sentence of the space, both searches start from it: {fp32_space.encode(seed)}")
    else:
        print("the hand design is not a sentence of this space; the searches start from random designs only")

    with tempfile.TemporaryDirectory(prefix="nasmtl-bench-quant-") as tmp:
        lab = Lab(data, Path(tmp), cfg, args.latency_runs, quant.calibration_samples, args.head_pool)
        fp32_all = QuantPolicy.uniform("fp32", n_stages)
        int8_all = QuantPolicy.uniform(INT8, n_stages)

        print("\n(a) hand-designed two-branch CNN", flush=True)
        cnn = lab.net(net_key(fp32_space, seed) if seed is not None else "two-branch-cnn", hand)
        a_fp32 = lab.measure("a-fp32", "two-branch-cnn", cnn, fp32_all)
        a_int8 = lab.measure("a", "two-branch-cnn", cnn, int8_all)
        print(f"  fp32 test {a_fp32.test:.3f} {a_fp32.bytes / 1e3:.1f} kB {a_fp32.latency_ms:.3f} ms; "
              f"int8 test {a_int8.test:.3f} {a_int8.bytes / 1e3:.1f} kB {a_int8.latency_ms:.3f} ms "
              f"(trained in {cnn.seconds:.1f} s)", flush=True)

        print("\n(b) architecture search in fp32", flush=True)
        init = max(args.trainings // 2, 1)
        start_rng = np.random.default_rng(args.seed + 1)
        start = ([seed] if seed is not None else []) + [fp32_space.sample(start_rng) for _ in range(init)]
        start = start[:init]
        b_fp32, _ = search(lab, fp32_space, "b-fp32", args.trainings, args.trainings,
                           np.random.default_rng(args.seed + 2), start)
        b_front = {p.net: p for c in ("bytes", "latency_ms") for p in front(b_fp32, c)}
        b_int8 = [lab.measure("b", p.design, lab.nets[p.net], int8_all) for p in b_front.values()]

        print("\n(c) joint search: architecture x layout x quantization policy", flush=True)
        q_rng = np.random.default_rng(args.seed + 3)
        c_all, _ = search(lab, joint_space, "c", args.trainings, args.trainings * args.policies,
                          np.random.default_rng(args.seed + 4), [with_policy(d, quant.sample(q_rng)) for d in start])
        c_front = {(p.net, p.applied): p for c in ("bytes", "latency_ms") for p in front(c_all, c)}
        for p in c_front.values():
            lab.measure("c-fp32", p.design, lab.nets[p.net], fp32_all)
            lab.measure("c-int8", p.design, lab.nets[p.net], int8_all)

        shown = [a_fp32, a_int8, *b_int8, *c_front.values()]
        shown += [lab.measured[(p.net, str(q))] for p in c_front.values() for q in (fp32_all, int8_all)]
        remeasure(list(lab.measured.values()), runs=args.latency_runs, rounds=3)
        for pt in shown:
            pt.latency_ms = lab.measured[(pt.net, pt.policy)].latency_ms

        for cost, unit in (("bytes", "bytes"), ("latency_ms", "latency")):
            print(f"\n==== Pareto fronts on validation mean accuracy vs {unit} (figures: test split) ====")
            show("(a) two-branch CNN, all int8", [a_int8])
            show("(b) fp32 search front, each quantized all int8", front(b_int8, cost))
            show("(c) joint search front", front(list(c_front.values()), cost), lab, (str(fp32_all), str(int8_all)))

        ref_b = max(b_int8, key=lambda p: p.val)
        ours = list(c_front.values())
        print("\n==== Joint front vs each baseline at the baseline's best accuracy (test split) ====")
        for name, ref in (("(a) two-branch CNN int8", a_int8), ("(b) fp32 search + int8", ref_b)):
            print(f"{name}: test {ref.test:.3f} (val {ref.val:.3f}), {ref.bytes / 1e3:.1f} kB, {ref.latency_ms:.3f} ms")
            for label, tolerance in (("no accuracy loss:", 0.0), ("within 1 point:  ", 0.01)):
                text, picked = ratios(ours, ref, tolerance)
                print(f"  {label}   {text}")
                for pt in [q for i, q in enumerate(picked) if all(q is not r for r in picked[:i])]:
                    print(f"      {pt.design} [{pt.applied}]")
        print(f"\n{len(lab.nets)} networks trained in {lab.train_seconds:.0f} s, {len(lab.measured)} ONNX models "
              f"measured; total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
