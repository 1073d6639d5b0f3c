"""The ``predictor`` search strategy: BANANAS-like search steered by an MLP ensemble (ask/tell).

After ``n_init`` random designs, each ``ask`` refits the ensemble on every design told so far
(targets replaced by the normal scores of their ranks, so a few broken designs do not dominate
the fit), proposes ``candidates`` new designs (1 to ``max_mutations`` mutations of one of the
``top_parents`` best / the observed Pareto set, and a ``random_fraction`` of fresh draws), scores
them and returns the one with the best acquisition:

* one objective: independent Thompson sampling (``acquisition="its"``: each candidate scored by
  one randomly drawn ensemble member, as in BANANAS) or an upper confidence bound (``"ucb"``:
  mean + ``kappa`` * std);
* two or three: hypervolume improvement, over the observed front, of the optimistic point
  mean + ``kappa`` * std (objectives scaled by the observed range).

With a transferred ``source`` (``nasmtl.predict.source``: a predictor of the objective on
another task), the ``n_init`` first designs are the source's best-scored of ``source_pool`` random
draws, candidate pools add those draws, and the ensemble learns the residual of the rank-normal
targets over the source's rank-normal score scaled by its fitted slope (the source as prior mean).

With ``skip_dominated`` and several objectives, candidates whose optimistic point is dominated by
the observed front are declined before the acquisition (``skipped`` counts them).

Designs are encoded by ``featurizer(design) -> vector``. :func:`default_featurizer` gives ONNX graph
features (``nasmtl.predict.encoding``) for NAS-Bench-201 cells when the encoding cache holds every
distinct cell (``python -m nasmtl.predict.data``), and otherwise a one-hot of the space's decisions
(``space.choices``), which needs no build or export; ``PredictorStrategy.encoding`` says which.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Sequence

import numpy as np
import torch

from nasmtl.predict.model import fit_ensemble, predict_torch
from nasmtl.search.hypervolume import hypervolume
from nasmtl.search.pareto import pareto_indices

Featurizer = Callable[[Any], np.ndarray]
HASH_DIM = 1024


class ChoiceOneHot:
    """One-hot of ``space.choices(x)``: exact per decision and option where the space lists them, else hashed."""

    def __init__(self, space: Any) -> None:
        self.space = space
        self.index: dict[tuple[str, str], int] | None = None
        keys = getattr(space, "decision_keys", None)
        options = getattr(space, "_options", None)
        if callable(keys) and callable(options):
            index: dict[tuple[str, str], int] = {}
            for k in keys():
                for o in options(k)[0]:
                    index[(k, str(o))] = len(index)
            self.index = index
        self.dim = len(self.index) if self.index is not None else HASH_DIM

    def __call__(self, x: Any) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for k, o in self.space.choices(x).items():
            if self.index is not None and (k, str(o)) in self.index:
                v[self.index[(k, str(o))]] = 1.0
            else:
                h = hashlib.blake2b(f"{k}={o}".encode(), digest_size=8).digest()
                v[int.from_bytes(h, "little") % self.dim] = 1.0
        return v


class CachedOnnxFeatures:
    """ONNX graph features of cell designs, looked up in a complete encoding cache by canonical string."""

    def __init__(self, space: Any, rows: dict[str, np.ndarray]) -> None:
        self.space, self.rows = space, rows

    def __call__(self, x: Any) -> np.ndarray:
        return self.rows[self.space.encode(x)]


@lru_cache(maxsize=1)
def _nb201_onnx_rows() -> dict[str, np.ndarray] | None:
    """The NAS-Bench-201 ONNX feature cache when it holds every distinct cell of the table, else None."""
    from nasmtl.predict.data import FeatureCache, nb201_cache_path

    cache = FeatureCache.open(nb201_cache_path())
    if len(cache) == 0:
        return None
    from nasmtl.nasbench import load_table

    tab = load_table("nb201")
    needed = {tab.space.encode(tab.design_of(k)) for k in tab.keys}
    return cache.rows if needed <= set(cache.rows) else None


def default_featurizer(space: Any) -> tuple[Featurizer, str]:
    """ONNX features for the NAS-Bench-201 cell space when fully cached, else a one-hot of decisions."""
    if getattr(space, "name", None) == "nb201" and hasattr(space, "to_arch"):
        try:
            rows = _nb201_onnx_rows()
        except ImportError:
            rows = None
        if rows is not None:
            return CachedOnnxFeatures(space, rows), "onnx-graph (cached)"
    return ChoiceOneHot(space), "choices one-hot"


@dataclass
class PredictorStrategy:
    """BANANAS-like ask/tell strategy: ensemble fit on told designs, mutations scored by ITS/UCB or optimistic HVI."""

    space: Any
    directions: Sequence[str]
    seed: int = 0
    n_init: int = 10
    candidates: int = 100
    kappa: float = 0.5
    members: int = 5
    hidden: int = 32
    steps: int = 60
    lr: float = 2e-2
    rank_targets: bool = True
    acquisition: str = "its"
    random_fraction: float = 0.2
    max_mutations: int = 3
    top_parents: int = 10
    featurizer: Featurizer | None = None
    encoding: str = ""
    prior: Any = None
    """Sampling weights of the random designs (``{decision: {option: weight}}``, e.g. transferred priors)."""
    source: Callable[[Sequence[Any]], np.ndarray] | None = None
    """Transferred scorer of the (single) objective on another task: designs -> values, higher = better."""
    source_pool: int = 1000
    skip_dominated: bool = False
    skipped: int = 0
    """Candidates declined because their optimistic predicted point is dominated by the observed front."""
    _rng: np.random.Generator = field(init=False, repr=False)
    _seen: set[str] = field(default_factory=set, repr=False)
    _designs: list = field(default_factory=list, repr=False)
    _x: list = field(default_factory=list, repr=False)
    _y: list = field(default_factory=list, repr=False)
    _keys: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._sign = np.array([1.0 if d == "maximize" else -1.0 for d in self.directions])
        if self.acquisition not in ("its", "ucb"):
            raise ValueError(f"acquisition must be 'its' or 'ucb', got {self.acquisition!r}")
        if self.source is not None and len(self.directions) != 1:
            raise ValueError("a transferred source scores one objective; got several directions")
        if self.featurizer is None:
            self.featurizer, self.encoding = default_featurizer(self.space)
        elif not self.encoding:
            self.encoding = type(self.featurizer).__name__

    def ask(self) -> Any:
        """A random (or source-picked) design while fewer than ``n_init`` (at least 2) are told, then the
        best-scored candidate."""
        if len(self._y) < max(2, self.n_init):
            draws = self._draws(self.source_pool) if self.source is not None else []
            if not draws:
                return self._fresh(lambda: self.space.sample(self._rng, self.prior))
            best = draws[int(np.argmax(self.source(draws)))]
            self._seen.add(self._key(best))
            return best
        pool = self._pool()
        if self.source is not None:
            pool = list({self._key(d): d for d in pool + self._draws(self.source_pool)}.values())
        if not pool:
            return self._fresh(lambda: self.space.sample(self._rng, self.prior))
        torch.set_num_threads(1)
        y = np.array(self._y) * self._sign
        if self.rank_targets:
            y = _normal_scores(y)
        prior_told, prior_pool = self._prior_mean(pool, y)
        net = fit_ensemble(np.stack(self._x), y - prior_told, members=self.members, hidden=self.hidden,
                           steps=self.steps, lr=self.lr, seed=int(self._rng.integers(2**31)))
        feats = np.stack([self.featurizer(d) for d in pool])
        if self.skip_dominated and y.shape[1] > 1:
            mean, std = predict_torch(net, feats)
            keep = optimistic_reachable(mean + prior_pool, std, y, self.kappa)
            self.skipped += int((~keep).sum())
            if not keep.any():
                return self._fresh(lambda: self.space.sample(self._rng, self.prior))
            pool, feats, prior_pool = [d for d, k in zip(pool, keep) if k], feats[keep], prior_pool[keep]
        if self.acquisition == "its" and y.shape[1] == 1:
            with torch.no_grad():
                members = net.members_normalised(torch.as_tensor(feats)).numpy()[:, :, 0]
            pick = self._rng.integers(len(members), size=len(pool))
            drawn = members[pick, np.arange(len(pool))] * float(net.y_std[0]) + float(net.y_mean[0])
            score = drawn + prior_pool[:, 0]
        else:
            mean, std = predict_torch(net, feats)
            score = self._acquisition(mean + prior_pool, std, y)
        best = pool[int(np.argmax(score))]
        self._seen.add(self._key(best))
        return best

    def seen(self, design: Any) -> None:
        """Mark a design as evaluated elsewhere (never proposed again)."""
        self._seen.add(self._key(design))

    def tell(self, design: Any, objectives: Sequence[float]) -> None:
        """Add an evaluated design; non-finite values are kept out of the training set."""
        self._seen.add(self._key(design))
        vals = np.asarray(objectives, dtype=float)
        if vals.shape != self._sign.shape or not np.isfinite(vals).all():
            return
        self._designs.append(design)
        self._x.append(np.asarray(self.featurizer(design), dtype=np.float32))
        self._y.append(vals)

    # ---- internals --------------------------------------------------------------------------------

    def _key(self, x: Any) -> str:
        """The canonical string of a design, memoised (designs of cell spaces are hashable)."""
        try:
            if x in self._keys:
                return self._keys[x]
            self._keys[x] = key = self.space.encode(x)
            return key
        except TypeError:
            return self.space.encode(x)

    def _fresh(self, draw: Callable[[], Any]) -> Any:
        x = draw()
        for _ in range(100):
            if self._key(x) not in self._seen:
                break
            x = draw()
        self._seen.add(self._key(x))
        return x

    def _draws(self, n: int) -> list[Any]:
        """Up to ``n`` distinct random designs never asked or told."""
        out: dict[str, Any] = {}
        for _ in range(2 * n):
            if len(out) >= n:
                break
            x = self.space.sample(self._rng, self.prior)
            key = self._key(x)
            if key not in self._seen:
                out[key] = x
        return list(out.values())

    def _prior_mean(self, pool: list[Any], y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The source's prior mean on the target scale for told designs and ``pool`` (zeros without a source).

        Source scores of told designs and pool are replaced by normal scores of their joint ranks and
        scaled by the least-squares slope (at least 0) of the told targets on them.
        """
        if self.source is None:
            return np.zeros_like(y), np.zeros((len(pool), y.shape[1]))
        z = _normal_scores(np.asarray(self.source(self._designs + pool), dtype=float)[:, None])[:, 0]
        zt, zp = z[: len(self._designs)], z[len(self._designs):]
        zc = zt - zt.mean()
        beta = max(0.0, float(zc @ (y[:, 0] - y[:, 0].mean()) / max(float(zc @ zc), 1e-12)))
        return beta * zt[:, None], beta * zp[:, None]

    def _parents(self) -> list[Any]:
        """The best told designs (one objective) or the observed Pareto set (several)."""
        y = np.array(self._y) * self._sign
        if y.shape[1] == 1:
            order = np.argsort(-y[:, 0], kind="stable")[: self.top_parents]
            return [self._designs[i] for i in order]
        return [self._designs[i] for i in pareto_indices(-y)]

    def _pool(self) -> list[Any]:
        parents = self._parents()
        out: dict[str, Any] = {}
        tries = 0
        while len(out) < self.candidates and tries < 5 * self.candidates:
            tries += 1
            if self._rng.random() < self.random_fraction:
                x = self.space.sample(self._rng, self.prior)
            else:
                x = parents[int(self._rng.integers(len(parents)))]
                for _ in range(int(self._rng.integers(1, self.max_mutations + 1))):
                    x = self.space.mutate(x, self._rng)
            key = self._key(x)
            if key not in self._seen and key not in out:
                out[key] = x
        return list(out.values())

    def _acquisition(self, mean: np.ndarray, std: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Scores of candidates (maximised): UCB for one objective, optimistic HVI for several."""
        if mean.shape[1] == 1:
            return mean[:, 0] + self.kappa * std[:, 0]
        lo, hi = y.min(axis=0), y.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        front = -(y[pareto_indices(-y)] - lo) / span
        ref = np.full(y.shape[1], 0.1)
        base = hypervolume(front, ref)
        opt = -((mean + self.kappa * std) - lo) / span
        gains = np.array([hypervolume(np.vstack([front, p]), ref) - base for p in opt])
        if gains.max() <= 0:
            dist = np.min(np.linalg.norm(opt[:, None, :] - front[None], axis=2), axis=1)
            return -dist
        return gains


def optimistic_reachable(mean: np.ndarray, std: np.ndarray, observed: np.ndarray, kappa: float) -> np.ndarray:
    """Per candidate (rows, all objectives maximised), whether mean + ``kappa`` * std is not dominated by an
    ``observed`` point: False marks a candidate predicted unable to reach the front."""
    opt = mean + kappa * std
    front = observed[pareto_indices(-observed)]
    ge = (front[None] >= opt[:, None]).all(axis=2)
    gt = (front[None] > opt[:, None]).any(axis=2)
    return ~(ge & gt).any(axis=1)


def _normal_scores(y: np.ndarray) -> np.ndarray:
    """Each column replaced by the normal quantiles of its ranks (ties averaged), so outliers do not dominate."""
    from scipy.stats import norm, rankdata

    n = len(y)
    return np.stack([norm.ppf((rankdata(col) - 0.5) / n) for col in y.T], axis=1)
