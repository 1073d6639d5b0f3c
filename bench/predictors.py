"""Predictor benchmarks: rank quality, transfer, throughput, the predictor sampler, TransNAS multi-task.

Run one part at a time (each under 10 minutes on 2 shared cores, but `mo`: about 15):

    python bench/predictors.py fit        # NB201 CIFAR-10: Kendall/Spearman vs training size, ONNX vs one-hot
    python bench/predictors.py transfer   # train on CIFAR-10, rank CIFAR-100 and ImageNet16-120 cells
    python bench/predictors.py speed      # candidates/s with and without encoding (onnxruntime)
    python bench/predictors.py search --seeds 20   # queries to within 0.3 of the best CIFAR-10-valid accuracy
    python bench/predictors.py mo --seeds 10   # accuracy vs latency: hypervolume, predictor@100 vs tpe@300
    python bench/predictors.py transnas   # one 7-task predictor vs 7 single-task ones; our proxies vs the table's

``search`` runs the predictor sampler without transfer, ``predictor-from-imagenet16`` (warm-started
from ``predictors/nb201-imagenet16.onnx``, trained on 1,000 cells' ImageNet16-120 accuracy only,
never CIFAR-10), ``imagenet16-source-only`` (the ablation that only ever asks the source's best of
1,000 fresh random draws, never refitting) and the baselines, in one run; ``--source-cells 100``
adds the same two with a weaker source trained here on 100 cells' ImageNet16-120 accuracy.

NAS-Bench-201 parts need the encoding cache (``python -m nasmtl.predict.data``, about 15 min once)
and the bench extra. Splits never put isomorphic cells on both sides: the data keep one table
row per canonical cell. Ratios compare against a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nasmtl.predict.data import Dataset, nb201_dataset
from nasmtl.predict.model import fit_ensemble, predict_torch, rank_metrics

torch.set_num_threads(1)
SIZES = (50, 100, 200, 500, 1000)
OPS5 = 5


def one_row_per_cell(data: Dataset, seed: int = 0) -> Dataset:
    """Keep one random table row per canonical cell (isomorphic rows share one ONNX graph)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.groups))
    keep, seen = [], set()
    for i in order:
        if data.groups[i] not in seen:
            seen.add(data.groups[i])
            keep.append(i)
    keep = np.sort(np.array(keep))
    return Dataset(data.features[keep], data.targets[keep], data.outputs, [data.designs[i] for i in keep],
                   data.source, [data.groups[i] for i in keep])


def one_hot_keys(keys: list[str]) -> np.ndarray:
    """The plain baseline: one-hot of the 6 edge ops of each NAS-Bench-201 table key (30 columns)."""
    out = np.zeros((len(keys), 6 * OPS5), dtype=np.float32)
    for r, k in enumerate(keys):
        for e, c in enumerate(k):
            out[r, e * OPS5 + int(c)] = 1.0
    return out


def load_nb201() -> Dataset:
    data = nb201_dataset(cached_only=True)
    if len(data.features) == 0:
        sys.exit("no NB201 encodings cached: run python -m nasmtl.predict.data first")
    return one_row_per_cell(data)


def part_fit(repeats: int) -> None:
    data = load_nb201()
    onehot = one_hot_keys(data.designs)
    y = data.targets[:, :1]
    print(f"NB201 CIFAR-10 val_acc, {len(y)} distinct cells with ONNX encodings; held-out = all cells not trained on; "
          f"{repeats} repeats (mean ± std)")
    print(f"{'train':>6} {'onnx tau':>14} {'onehot tau':>14} {'onnx rho':>14} {'onehot rho':>14} {'tau ratio':>9}")
    for n in SIZES:
        res: dict[str, list[tuple[float, float]]] = {"onnx": [], "onehot": []}
        for r in range(repeats):
            perm = np.random.default_rng(100 + r).permutation(len(y))
            tr, te = perm[:n], perm[n:]
            for name, x in (("onnx", data.features), ("onehot", onehot)):
                net = fit_ensemble(x[tr], y[tr], seed=r, steps=400, hidden=64)
                m = rank_metrics(predict_torch(net, x[te])[0], y[te], ["c10"])["c10"]
                res[name].append((m["kendall_tau"], m["spearman"]))
        a, b = np.array(res["onnx"]), np.array(res["onehot"])
        print(f"{n:>6} {a[:, 0].mean():>8.3f}±{a[:, 0].std():.3f} {b[:, 0].mean():>8.3f}±{b[:, 0].std():.3f} "
              f"{a[:, 1].mean():>8.3f}±{a[:, 1].std():.3f} {b[:, 1].mean():>8.3f}±{b[:, 1].std():.3f} "
              f"{a[:, 0].mean() / b[:, 0].mean():>9.2f}", flush=True)


def part_transfer(repeats: int, n: int = 1000) -> None:
    data = load_nb201()
    names = ["CIFAR-10", "CIFAR-100", "ImageNet16-120"]
    print(f"trained on {n} cells' CIFAR-10 val_acc only; Kendall tau on held-out cells against each data set "
          f"(direct = a model trained on that data set's values, same cells), {repeats} repeats")
    trans, direct = np.zeros((repeats, 3)), np.zeros((repeats, 3))
    for r in range(repeats):
        perm = np.random.default_rng(200 + r).permutation(len(data.targets))
        tr, te = perm[:n], perm[n:]
        net = fit_ensemble(data.features[tr], data.targets[tr, :1], seed=r, steps=400, hidden=64)
        pred = predict_torch(net, data.features[te])[0][:, 0]
        multi = fit_ensemble(data.features[tr], data.targets[tr], seed=r, steps=400, hidden=64)
        mp = predict_torch(multi, data.features[te])[0]
        for j in range(3):
            trans[r, j] = rank_metrics(pred, data.targets[te, j], ["x"])["x"]["kendall_tau"]
            direct[r, j] = rank_metrics(mp[:, j], data.targets[te, j], ["x"])["x"]["kendall_tau"]
    for j, nm in enumerate(names):
        print(f"  {nm:<15} transfer tau {trans[:, j].mean():.3f}±{trans[:, j].std():.3f}   "
              f"direct tau {direct[:, j].mean():.3f}±{direct[:, j].std():.3f}   ratio {trans[:, j].mean() / direct[:, j].mean():.3f}")


def part_speed() -> None:
    from nasmtl.arch.torch_build import to_torch
    from nasmtl.nasbench import load_table
    from nasmtl.onnx import export_onnx
    from nasmtl.predict.encoding import feature_vector
    from nasmtl.predict.model import load_predictor, save_predictor

    data = load_nb201()
    tab = load_table("nb201")
    with tempfile.TemporaryDirectory() as tmp:
        net = fit_ensemble(data.features[:500], data.targets[:500], steps=100, hidden=64)
        save_predictor(net, Path(tmp) / "p.onnx", data.outputs, {}, {})
        pred = load_predictor(Path(tmp) / "p.onnx")
        x = np.tile(data.features, (max(1, 20000 // len(data.features) + 1), 1))[:20000]
        pred.predict_features(x[:100])
        t = time.perf_counter()
        for _ in range(3):
            pred.predict_features(x)
        feat_rate = 3 * len(x) / (time.perf_counter() - t)
        t = time.perf_counter()
        for row in x[:500]:
            pred.predict_features(row[None])
        single_rate = 500 / (time.perf_counter() - t)
        files, build_s = [], 0.0
        rng = np.random.default_rng(0)
        for i in range(60):
            d = tab.space.sample(rng)
            t = time.perf_counter()
            p = Path(tmp) / f"c{i}.onnx"
            export_onnx(to_torch(tab.space.to_arch(d, (3, 32, 32), {"out": 10}), seed=0), (3, 32, 32), p)
            build_s += time.perf_counter() - t
            files.append(p)
        t = time.perf_counter()
        pred.predict_onnx(files)
        enc_rate = len(files) / (time.perf_counter() - t)
        t = time.perf_counter()
        for p in files:
            feature_vector(p)
        enc_only = len(files) / (time.perf_counter() - t)
    print(f"scoring feature rows in onnxruntime (batches of 4096): {feat_rate:,.0f} candidates/s")
    print(f"scoring one row per call: {single_rate:,.0f} candidates/s")
    print(f"encoding included (ONNX file -> features -> score): {enc_rate:,.0f} candidates/s "
          f"(encoding alone {enc_only:,.0f}/s); ratio excluded/included {feat_rate / enc_rate:,.0f}x")
    print(f"for reference, building + exporting an NB201 cell to ONNX: {len(files) / build_s:.1f} cells/s")


def _queries_to(curve: list[float], tol: float) -> int | None:
    for i, r in enumerate(curve):
        if r <= tol + 1e-9:
            return i + 1
    return None


def queries_to_target(tab, sampler: str, seed: int, budget: int, tol: float, dataset: str = "cifar10") -> int | None:
    """Queries until the best val_acc found is within ``tol`` of the table's best, stopping there.

    The same protocol as ``run_benchmark`` (the runner's strategy factories, one table lookup per
    query, regret against the table best), cut short once the target is reached.
    """
    from nasmtl.nasbench.runner import strategy_factory

    strat = strategy_factory(sampler)(tab.space, ["maximize"], seed)
    col = tab.column(dataset, "val_acc")
    best, found = float(np.nanmax(col)), -np.inf
    for q in range(1, budget + 1):
        x = strat.ask()
        v = float(col[tab.row(x)])
        strat.tell(x, (v,))
        found = max(found, v)
        if best - found <= tol + 1e-9:
            return q
    return None


def register_variants() -> None:
    """Bench-only strategies: the predictor sampler forced to the one-hot encoding, with UCB, skipping
    candidates predicted dominated, and the transferred source alone (no refits on the run's results)."""
    from nasmtl.nasbench.runner import register_strategy
    from nasmtl.predict.strategy import ChoiceOneHot, PredictorStrategy
    from nasmtl.predict.source import nb201_imagenet16_source

    register_strategy("predictor-onehot", lambda s, d, seed: PredictorStrategy(
        s, list(d), seed=seed, featurizer=ChoiceOneHot(s), encoding="choices one-hot"))

    def skipper(s, d, seed: int) -> PredictorStrategy:
        SKIPPERS.append(PredictorStrategy(s, list(d), seed=seed, featurizer=ChoiceOneHot(s), encoding="choices one-hot",
                                          skip_dominated=True))
        return SKIPPERS[-1]

    register_strategy("predictor-onehot-skip", skipper)
    register_strategy("predictor-ucb", lambda s, d, seed: PredictorStrategy(s, list(d), seed=seed, acquisition="ucb"))
    register_strategy("imagenet16-source-only", lambda s, d, seed: PredictorStrategy(
        s, list(d), seed=seed, n_init=10**9, source=nb201_imagenet16_source(s)))


def register_small_source(cells: int) -> list[str]:
    """``predictor-from-imagenet16-N`` and ``imagenet16-N-source-only``: a weaker source, trained here on
    ``cells`` distinct cells' ImageNet16-120 val_acc (no CIFAR-10 data); returns the two names."""
    from nasmtl.nasbench import load_table
    from nasmtl.nasbench.runner import register_strategy
    from nasmtl.predict.strategy import PredictorStrategy, default_featurizer
    from nasmtl.predict.fit import group_split
    from nasmtl.predict.source import SourceScorer

    data = nb201_dataset(cached_only=True, datasets=("imagenet",))
    train, _ = group_split(data.groups, cells, 0)
    net = fit_ensemble(data.features[train], data.targets[train], steps=600, hidden=64, seed=0)
    source = SourceScorer(lambda x: predict_torch(net, x)[0], default_featurizer(load_table("nb201").space)[0])
    names = [f"predictor-from-imagenet16-{cells}", f"imagenet16-{cells}-source-only"]
    register_strategy(names[0], lambda s, d, seed: PredictorStrategy(s, list(d), seed=seed, n_init=5, source=source))
    register_strategy(names[1], lambda s, d, seed: PredictorStrategy(s, list(d), seed=seed, n_init=10**9,
                                                                      source=source))
    return names


SKIPPERS: list = []
"""The ``predictor-onehot-skip`` strategies made so far (their ``skipped`` counts are reported)."""


def part_search(samplers: list[str], seeds: int, budgets: dict[str, int], tol: float, source_cells: int = 0) -> None:
    from nasmtl.nasbench import load_table
    from nasmtl.predict.strategy import default_featurizer

    from nasmtl.predict.model import load_predictor
    from nasmtl.predict.source import NB201_IMAGENET16

    tab = load_table("nb201")
    register_variants()
    print(f"NB201 CIFAR-10 val_acc (mean of 3 seeds), best {tab.best('cifar10')[1]:.4f}: queries until regret <= {tol} "
          f"over {seeds} seeds; 'predictor' encodes with {default_featurizer(tab.space)[1]}")
    card = load_predictor(NB201_IMAGENET16).card
    td = card["training_data"]
    print(f"transfer source {NB201_IMAGENET16.name}: outputs {card['outputs']} (no CIFAR-10 data), "
          f"{td['train_cells']} training cells, held-out Kendall tau "
          f"{card['held_out'][card['outputs'][0]]['kendall_tau']:.3f} on {td['test_cells']} unseen cells")
    if source_cells:
        small = register_small_source(source_cells)
        samplers = samplers + small
        budgets.update({n: budgets["predictor"] for n in small})
        print(f"weaker source: the same ensemble trained here on {source_cells} cells' ImageNet16-120 val_acc: {small}")
    for s in samplers:
        budget = budgets.get(s, budgets["default"])
        t = time.perf_counter()
        q = [queries_to_target(tab, s, seed, budget, tol) for seed in range(seeds)]
        got = sorted(v for v in q if v is not None)
        med = np.median(np.array([v if v is not None else np.inf for v in q]))
        med_s = f"{med:.1f}" if np.isfinite(med) else f">{budget}"
        print(f"  {s:<17} budget {budget:>3}: reached {len(got)}/{seeds}, median queries {med_s:>6}, "
              f"quartiles {np.percentile([v if v is not None else budget + 1 for v in q], [25, 75])}, "
              f"per seed {['-' if v is None else v for v in q]}  ({time.perf_counter() - t:.0f} s)", flush=True)


def part_mo(seeds: int, pred_budget: int, tpe_budget: int) -> None:
    from nasmtl.nasbench import load_table
    from nasmtl.nasbench.runner import run_benchmark

    tab = load_table("nb201")
    register_variants()
    print(f"NB201 CIFAR-10 val_acc vs latency: hypervolume fraction of the true front, {seeds} seeds")
    out = {}
    for s, b in (("predictor", pred_budget), ("predictor-onehot", pred_budget), ("predictor-onehot-skip", pred_budget),
                 ("tpe", tpe_budget), ("random", tpe_budget)):
        SKIPPERS.clear()
        t = time.perf_counter()
        res = run_benchmark(tab, s, budget=b, seeds=seeds, dataset="cifar10", objectives=("val_acc", "latency"))
        at100 = [r.curve[min(99, b - 1)] for r in res.runs]
        out[s] = res.summary["median"]
        skipped = f"; candidates skipped per run {[k.skipped for k in SKIPPERS]}" if SKIPPERS else ""
        print(f"  {s:<10} after {b:>3}: median {res.summary['median']:.4f} mean {res.summary['mean']:.4f}; "
              f"after 100: median {np.median(at100):.4f}  ({time.perf_counter() - t:.0f} s){skipped}", flush=True)
    print(f"  ratio predictor@{pred_budget} / tpe@{tpe_budget}: {out['predictor'] / out['tpe']:.3f}")


def part_transnas(repeats: int, n_train: int, proxy_cells: int) -> None:
    from nasmtl.predict.data import (TRANSNAS_TASKS, FeatureCache, encode_designs, nb201_cache_path,
                                     transnas_design, transnas_table)
    from nasmtl.predict.model import kendall_tau
    from nasmtl.spaces.cell import SEARCH_SPACES, CellSpace

    cells, scores, theirs = transnas_table()
    space = CellSpace.from_file(SEARCH_SPACES / "nb201.toml")
    designs = [transnas_design(space, c) for c in cells]
    t = time.perf_counter()
    feats = encode_designs(space, designs, FeatureCache.open(nb201_cache_path()))
    print(f"TransNAS-Bench-101 micro: {len(cells)} cells x {len(TRANSNAS_TASKS)} tasks, ONNX features in "
          f"{time.perf_counter() - t:.0f} s; {n_train} training cells, Kendall tau on the rest, {repeats} repeats")
    multi, single = np.zeros((repeats, 7)), np.zeros((repeats, 7))
    for r in range(repeats):
        perm = np.random.default_rng(300 + r).permutation(len(cells))
        tr, te = perm[:n_train], perm[n_train:]
        net = fit_ensemble(feats[tr], scores[tr], seed=r, steps=400, hidden=64)
        mp = predict_torch(net, feats[te])[0]
        for j in range(7):
            multi[r, j] = kendall_tau(mp[:, j], scores[te, j])
            one = fit_ensemble(feats[tr], scores[tr, j:j + 1], seed=r, steps=400, hidden=64)
            single[r, j] = kendall_tau(predict_torch(one, feats[te])[0][:, 0], scores[te, j])
    print(f"  {'task':<16} {'one 7-task model':>17} {'7 single-task':>15}")
    for j, task in enumerate(TRANSNAS_TASKS):
        print(f"  {task:<16} {multi[:, j].mean():>11.3f}±{multi[:, j].std():.3f} {single[:, j].mean():>9.3f}±{single[:, j].std():.3f}")
    print(f"  {'mean':<16} {multi.mean():>11.3f}       {single.mean():>9.3f}        ratio {multi.mean() / single.mean():.3f}")
    if proxy_cells <= 0:
        return
    ours = part_transnas_proxies(space, designs, scores, theirs, proxy_cells)
    if proxy_cells >= len(designs):
        idx = np.random.default_rng(0).permutation(len(designs))[:proxy_cells]
        extra = np.zeros((len(designs), len(ours)), dtype=np.float32)
        for c, vals in enumerate(ours.values()):
            v = np.nan_to_num(vals, nan=0.0, posinf=0.0, neginf=0.0)
            extra[idx, c] = np.sign(v) * np.log1p(np.abs(v))
        both = np.concatenate([feats, extra], axis=1)
        with_p = np.zeros((repeats, 7))
        for r in range(repeats):
            perm = np.random.default_rng(300 + r).permutation(len(cells))
            tr, te = perm[:n_train], perm[n_train:]
            net = fit_ensemble(both[tr], scores[tr], seed=r, steps=400, hidden=64)
            mp = predict_torch(net, both[te])[0]
            with_p[r] = [kendall_tau(mp[:, j], scores[te, j]) for j in range(7)]
        print("one 7-task model on ONNX features + our 4 proxies (log): "
              + ", ".join(f"{t} {with_p[:, j].mean():.3f}" for j, t in enumerate(TRANSNAS_TASKS))
              + f"; mean {with_p.mean():.3f} (ONNX only {multi.mean():.3f}, ratio {with_p.mean() / multi.mean():.3f})")


def part_transnas_proxies(space, designs, scores, theirs, n: int) -> dict[str, np.ndarray]:
    from nasmtl.arch.torch_build import to_torch
    from nasmtl.predict.data import TRANSNAS_TASKS
    from nasmtl.predict.model import kendall_tau
    from nasmtl.predict.proxies import PROXIES, zero_cost_proxies

    idx = np.random.default_rng(0).permutation(len(designs))[:n]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (16,), generator=gen)
    t = time.perf_counter()
    ours = {p: np.zeros(len(idx)) for p in PROXIES}
    for i, k in enumerate(idx):
        model = to_torch(space.to_arch(designs[k], (3, 32, 32), {"out": 10}), seed=0)
        for p, v in zero_cost_proxies(model, x, {"out": y}).items():
            ours[p][i] = v
    print(f"zero-cost proxies on {len(idx)} cells ({(time.perf_counter() - t) / len(idx):.2f} s/cell, nb201 space "
          f"C=8 N=1, random 16x3x32x32 batch); Kendall tau with each task's score:")
    match = {"synflow": "synflow", "naswot": "nwot", "grad_norm": "grad_norm", "snip": "snip"}
    print(f"  {'proxy':<20} " + " ".join(f"{t[:10]:>10}" for t in TRANSNAS_TASKS) + "  tau(ours, theirs)")
    for p in PROXIES:
        th = theirs[match[p]][idx] if match[p] in theirs else None
        agree = f"{np.nanmean([kendall_tau(ours[p], th[:, j]) for j in range(7)]):.3f}" if th is not None else "n/a"
        print(f"  {p + ' (ours)':<20} " + " ".join(f"{kendall_tau(ours[p], scores[idx, j]):>10.3f}" for j in range(7))
              + f"  {agree}")
        if th is None:
            print(f"  {match[p] + ' (table)':<20} not in the table")
        else:
            print(f"  {match[p] + ' (table)':<20} " + " ".join(f"{kendall_tau(th[:, j], scores[idx, j]):>10.3f}"
                                                          for j in range(7)))
    return ours


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["fit", "transfer", "speed", "search", "mo", "transnas"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--samplers",
                    default="predictor,predictor-from-imagenet16,imagenet16-source-only,evolution,random,tpe")
    ap.add_argument("--budget", type=int, default=300, help="search: budget of the baselines")
    ap.add_argument("--predictor-budget", type=int, default=100)
    ap.add_argument("--tol", type=float, default=0.3)
    ap.add_argument("--source-cells", type=int, default=0,
                    help="search: also a weaker ImageNet16-120 source trained on this many cells (0: none)")
    ap.add_argument("--train", type=int, default=100, help="transnas: training cells")
    ap.add_argument("--proxy-cells", type=int, default=200,
                    help="transnas: cells to compute our proxies on (all 711: also a predictor with proxy features)")
    a = ap.parse_args(argv)
    t = time.perf_counter()
    if a.part == "fit":
        part_fit(a.repeats)
    elif a.part == "transfer":
        part_transfer(a.repeats)
    elif a.part == "speed":
        part_speed()
    elif a.part == "search":
        budgets = {"default": a.budget, **{p: a.predictor_budget for p in (
            "predictor", "predictor-onehot", "predictor-from-imagenet16", "imagenet16-source-only")}}
        part_search([s.strip() for s in a.samplers.split(",") if s.strip()], a.seeds, budgets, a.tol, a.source_cells)
    elif a.part == "mo":
        part_mo(a.seeds, a.predictor_budget, a.budget)
    else:
        part_transnas(a.repeats, a.train, a.proxy_cells)
    print(f"# {a.part}: {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
