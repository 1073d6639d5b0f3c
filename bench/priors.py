"""Transferred priors, leave one data set out: evaluations needed to reach what 100 evaluations without priors reach.

    python bench/priors.py [--tables nbgraph,nb201,transnas,graphgym] [--seeds 10] [--sampler evolution]
                           [--anchors 10] [--k 3] [--cap 400]

For each table and each held-out data set (task), the bank is the table's other data sets. Target:
the median over seeds of the best validation accuracy after 100 evaluations of the sampler without
priors. Arms, each over the same seeds, counting every table query as an evaluation:

- ``none``: the sampler alone;
- ``anchor``: the held-out task first evaluates K anchor designs (counted), whose rank-normalised
  scores are its embedding; priors and warm starts come from the k most similar bank tasks;
- ``uniform``: priors and warm starts from all bank tasks equally (no embedding, no anchors).

Prints per held-out data set the median evaluations to reach the target (">cap" when a median run
never reached it within ``--cap``), the ratio anchor/none and uniform/none, and the median ratio
over held-out data sets. Also checks the anchor embedding: over all pairs of tasks, Spearman
correlation between embedding similarity and (a) the tasks' true rank correlation over all
designs, (b) how well each task's top-1% designs do on the other (mean percentile, symmetrised).
``graphgym`` (AutoTransfer's design bank, no design shared between tasks) checks the ``effect``
embedding only: built from half of each task's records, is the task's nearest neighbour among the
embeddings of the other halves the task itself (top-1 retrieval over 32 tasks)?
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any, Sequence

import numpy as np

from nasmtl.nasbench.runner import strategy_factory
from nasmtl.priors.bank import Record, percentiles, records_from_table, records_from_transnas
from nasmtl.priors.embedding import anchor_embedding, choose_anchors, rank_correlation, scores_by_task, similarity
from nasmtl.priors.transfer import Priors, transfer, with_priors


def load(name: str) -> tuple[Any, list[Record]]:
    """The table and its bank records."""
    if name == "transnas":
        from nasmtl.priors.tables import transnas_table

        return transnas_table(), records_from_transnas()
    from nasmtl.nasbench.table import load_table

    tab = load_table(name)
    return tab, records_from_table(tab)


def task_of(tab: Any, ds: str) -> str:
    return f"transnas/{ds}" if tab.name == "transnas-micro" else f"{tab.name}/{ds}"


class Oracle:
    """Validation accuracy of a design on one data set (a table lookup)."""

    def __init__(self, tab: Any, ds: str) -> None:
        self.tab, self.col = tab, tab.column(ds, "val_acc")

    def __call__(self, design: Any) -> float:
        return float(self.col[self.tab.row(design)])


class Search:
    """One seeded search: evaluate ``first`` designs, build the strategy (from their values), then ask/tell."""

    def __init__(self, tab: Any, oracle: Oracle, factory: Any, seed: int, first: Sequence[Any] = (),
                 priors_of: Any = None) -> None:
        self.oracle, self.curve, self.best = oracle, [], -np.inf
        seen = []
        for x in first:
            seen.append((x, self._eval(x)))
        fac = priors_of([v for _, v in seen]) if priors_of is not None else factory
        self.strat = fac(tab.space, ["maximize"], seed)
        for x, v in seen:
            self.strat.observe(x, (v,))

    def _eval(self, x: Any) -> float:
        v = self.oracle(x)
        self.best = max(self.best, v)
        self.curve.append(self.best)
        return v

    def run(self, cap: int, target: float | None = None) -> list[float]:
        """Continue until ``cap`` evaluations in all, or until the best reaches ``target``; the best-so-far curve."""
        while len(self.curve) < cap and (target is None or self.best < target):
            x = self.strat.ask()
            self.strat.tell(x, (self._eval(x),))
        return self.curve


def evals_to(curve: Sequence[float], target: float, cap: int) -> int:
    """1-based index of the first evaluation reaching ``target`` (``cap + 1`` when none does)."""
    for i, v in enumerate(curve):
        if v >= target - 1e-12:
            return i + 1
    return cap + 1


def embedding_check(tab: Any, by: dict[str, dict[str, float]], k_anchors: int) -> dict[str, float]:
    """Spearman over task pairs of anchor-embedding similarity vs true rank correlation and vs top-design transfer."""
    tasks = list(by)
    anchors = choose_anchors(by, k_anchors)
    emb = {t: anchor_embedding(by[t], anchors) for t in tasks}
    common = sorted(set.intersection(*(set(by[t]) for t in tasks)))
    pct = {t: dict(zip(common, percentiles([by[t][d] for d in common]))) for t in tasks}
    top = {t: sorted(common, key=lambda d: -by[t][d])[: max(5, len(common) // 100)] for t in tasks}
    sims, true, best = [], [], []
    for a, b in itertools.combinations(tasks, 2):
        sims.append(similarity(emb[a], emb[b]))
        true.append(rank_correlation([by[a][d] for d in common], [by[b][d] for d in common]))
        best.append(0.5 * (np.mean([pct[b][d] for d in top[a]]) + np.mean([pct[a][d] for d in top[b]])))
    return {"pairs": len(sims), "vs_true_rank_corr": rank_correlation(sims, true),
            "vs_top_design_transfer": rank_correlation(sims, best)}


def run_table(name: str, seeds: int, sampler: str, k_anchors: int, k: int, cap: int) -> list[float]:
    t0 = time.perf_counter()
    tab, records = load(name)
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(r.task, []).append(r)
    scores = scores_by_task(records)
    print(f"\n== {tab.name}: {len(tab.datasets)} data sets, {len(tab.keys)} designs, {len(records)} bank records "
          f"(loaded in {time.perf_counter() - t0:.0f} s); sampler {sampler}, {seeds} seeds, "
          f"{k_anchors} anchors, k = {k}, cap {cap}", flush=True)
    if len(tab.datasets) > 2:
        chk = embedding_check(tab, scores, k_anchors)
        print(f"embedding check over {chk['pairs']} task pairs: Spearman(similarity, true rank correlation) = "
              f"{chk['vs_true_rank_corr']:.2f}; Spearman(similarity, top-1% design transfer) = "
              f"{chk['vs_top_design_transfer']:.2f}")
    base = strategy_factory(sampler)
    print(f"{'held out':16s} {'target':>8s} {'none':>6s} {'anchor':>7s} {'uniform':>8s} {'r_anchor':>9s} "
          f"{'r_unif':>7s}  sources (anchor arm)")
    ratios_a, ratios_u = [], []
    for ds in tab.datasets:
        held = task_of(tab, ds)
        others = {t: rs for t, rs in groups.items() if t != held}
        oracle = Oracle(tab, ds)
        searches = [Search(tab, oracle, base, s) for s in range(seeds)]
        target = float(np.median([srch.run(100)[99] for srch in searches]))
        n0 = [evals_to(srch.run(cap, target), target, cap) for srch in searches]
        other_scores = {t: scores[t] for t in others}
        anchors = choose_anchors(other_scores, k_anchors)
        bank_emb = {t: anchor_embedding(other_scores[t], anchors) for t in others}
        anchor_designs = [tab.space.decode(a) for a in anchors]
        made: dict[str, Priors] = {}

        def anchor_priors(values: list[float]) -> Any:
            emb = 2.0 * percentiles(values) - 1.0
            pr = transfer(others, {t: similarity(emb, e) for t, e in bank_emb.items()}, k=k, space=tab.space,
                          kind="anchor")
            made["p"] = pr
            return with_priors(base, pr.prior, pr.warm_start)

        runs_a = [Search(tab, oracle, base, s, anchor_designs, anchor_priors).run(cap, target) for s in range(seeds)]
        uni = transfer(others, None, space=tab.space, kind="uniform")
        fac_u = with_priors(base, uni.prior, uni.warm_start)
        runs_u = [Search(tab, oracle, fac_u, s).run(cap, target) for s in range(seeds)]
        na = [evals_to(c, target, cap) for c in runs_a]
        nu = [evals_to(c, target, cap) for c in runs_u]
        m0, ma, mu = (float(np.median(v)) for v in (n0, na, nu))
        ratios_a.append(ma / m0)
        ratios_u.append(mu / m0)
        src = ", ".join(f"{t.split('/', 1)[1]} {w:.2f}" for t, w in made["p"].sources)

        def fmt(m: float) -> str:
            return f">{cap}" if m > cap else f"{m:g}"

        print(f"{ds:16s} {target:8.3f} {fmt(m0):>6s} {fmt(ma):>7s} {fmt(mu):>8s} {ma / m0:9.2f} {mu / m0:7.2f}  {src}",
              flush=True)
    print(f"median ratio (evaluations with priors / without): anchor {np.median(ratios_a):.2f}, "
          f"uniform {np.median(ratios_u):.2f}; {time.perf_counter() - t0:.0f} s")
    return ratios_a


def graphgym_check() -> None:
    """Split-half retrieval with the effect embedding on the GraphGym design bank."""
    from nasmtl.priors.bank import records_from_graphgym
    from nasmtl.priors.embedding import decision_options, effect_embedding

    recs = records_from_graphgym()
    opts = decision_options(recs)
    groups: dict[str, list[Record]] = {}
    for r in recs:
        groups.setdefault(r.task, []).append(r)
    half_a = {t: effect_embedding(rs[0::2], opts) for t, rs in groups.items()}
    half_b = {t: effect_embedding(rs[1::2], opts) for t, rs in groups.items()}
    ranks = []
    for t in groups:
        order = sorted(groups, key=lambda u: -similarity(half_a[t], half_b[u]))
        ranks.append(order.index(t) + 1)
    print(f"\n== graphgym: {len(recs)} records, {len(groups)} tasks; effect embedding, split-half retrieval: "
          f"top-1 {sum(r == 1 for r in ranks)}/{len(ranks)} (chance 1/{len(ranks)}), median rank {np.median(ranks):g}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", default="nbgraph,nb201,transnas,graphgym")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--sampler", default="evolution")
    p.add_argument("--anchors", type=int, default=10)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--cap", type=int, default=400)
    args = p.parse_args()
    for name in args.tables.split(","):
        if name == "graphgym":
            graphgym_check()
            continue
        run_table(name, args.seeds, args.sampler, args.anchors, args.k, args.cap)


if __name__ == "__main__":
    main()
