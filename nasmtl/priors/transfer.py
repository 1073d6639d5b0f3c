"""Design priors transferred from similar tasks: sampling weights per decision and warm-start designs.

From the K bank tasks most similar to the target (same space), each weighted by a softmax of its
similarity, the prior of a decision is the weighted frequency of each option among the tasks'
top designs (top 5%, at least 5), mixed with a uniform floor (20%) so no option is ruled out.
For grammar spaces the decisions ``rule@path`` are also pooled per rule: that is a production
probability, which the grammar sampler uses wherever the exact path has no prior. The warm-start
designs are the candidates (each task's best) with the highest similarity-weighted mean
percentile across the source tasks.

Priors plug into every sampler: the warm-start designs are enqueued as the study's first trials
(as parameters for optuna's samplers, so their models learn from them; as designs otherwise), the
``evolution`` population and ``random`` draws sample from the prior, and the benchmark runner
gets both through :func:`with_priors`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nasmtl.errors import first_line
from nasmtl.files import write_json
from nasmtl.priors.bank import Bank, BankError, Record, local_bank_path, percentiles, run_source, task_id
from nasmtl.priors.embedding import decision_options, scores_by_task, similarity
from nasmtl.run.rundir import RunDir

TOP_FRACTION = 0.05
MIN_TOP = 5
FLOOR = 0.2
TEMPERATURE = 0.2


@dataclass
class Priors:
    """A transferred prior (``{decision: {option: weight}}``), warm-start designs and where they came from."""

    prior: dict[str, dict[str, float]]
    warm_start: list[str]
    sources: list[tuple[str, float]]
    similarities: dict[str, float] = field(default_factory=dict)
    kind: str = "uniform"
    bank: str = ""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (stored in the study's user attrs and ``priors.json``)."""
        d = asdict(self)
        d["sources"] = [[t, w] for t, w in self.sources]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Priors":
        """Inverse of ``to_json``."""
        return cls({k: dict(v) for k, v in d["prior"].items()}, list(d["warm_start"]),
                   [(str(t), float(w)) for t, w in d["sources"]], dict(d.get("similarities", {})),
                   str(d.get("kind", "uniform")), str(d.get("bank", "")))

    def summary(self) -> str:
        """One line: the source tasks with their weights and the number of warm-start designs."""
        src = ", ".join(f"{t} ({w:.2f})" for t, w in self.sources)
        return (f"priors from {len(self.sources)} task(s) [{self.kind}]: {src}; "
                f"{len(self.warm_start)} warm-start design(s)")


def space_options(space: Any, records: Sequence[Record] = ()) -> dict[str, list[str]]:
    """Options of every decision: seen in ``records``, asked by ``space.sample_with``, or a grammar rule's labels."""
    opts = {k: list(v) for k, v in decision_options(records).items()}
    if hasattr(space, "sample_with"):
        asked: dict[str, list[str]] = {}

        def decide(key: str, options: Sequence[str], weights: Sequence[float]) -> str:
            asked.setdefault(key, [str(o) for o in options])
            return options[int(np.argmax(weights))]

        try:
            space.sample_with(decide)
        except Exception:
            asked = {}
        for k, v in asked.items():
            opts[k] = sorted(set(opts.get(k, [])) | set(v))
    rules = getattr(getattr(space, "grammar", None), "rules", None)
    if rules:
        for k in list(opts):
            rule = k.split("@", 1)[0]
            if rule in rules:
                opts[k] = sorted(set(opts[k]) | {a.label for a in rules[rule].alts})
        for rule, r in rules.items():
            if len(r.alts) > 1:
                opts[rule] = sorted({a.label for a in r.alts})
    return opts


def top_records(records: Sequence[Record], fraction: float = TOP_FRACTION, minimum: int = MIN_TOP) -> list[Record]:
    """The best ``fraction`` of a task's records (at least ``minimum``), best first."""
    n = max(minimum, int(math.ceil(fraction * len(records))))
    return sorted(records, key=lambda r: -r.score)[:n]


def source_weights(similarities: Mapping[str, float], k: int = 3, temperature: float = TEMPERATURE
                   ) -> list[tuple[str, float]]:
    """The ``k`` most similar tasks with softmax(similarity / temperature) weights, most similar first."""
    ranked = sorted(similarities.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    if not ranked:
        return []
    s = np.array([v for _, v in ranked]) / temperature
    w = np.exp(s - s.max())
    w /= w.sum()
    return [(t, float(wi)) for (t, _), wi in zip(ranked, w)]


def transfer(by_task: Mapping[str, Sequence[Record]], similarities: Mapping[str, float] | None = None,
             k: int = 3, space: Any = None, n_warm: int = 5, top_fraction: float = TOP_FRACTION,
             floor: float = FLOOR, kind: str = "uniform") -> Priors:
    """Priors from bank tasks of one space: the ``k`` most similar (without similarities: all, equally)."""
    tasks = [t for t, rs in by_task.items() if rs]
    if not tasks:
        raise BankError("no bank tasks of this space to transfer priors from")
    if similarities is None:
        sources = [(t, 1.0 / len(tasks)) for t in tasks]
        sims: dict[str, float] = {}
    else:
        sims = {t: float(similarities[t]) for t in tasks if t in similarities}
        sources = source_weights(sims, k)
        if not sources:
            raise BankError("no bank task has a similarity to the target task")
    all_records = [r for t in tasks for r in by_task[t]]
    options = space_options(space, all_records) if space is not None else decision_options(all_records)
    counts: dict[str, dict[str, float]] = {}
    for t, w in sources:
        top = top_records(by_task[t], top_fraction)
        for r in top:
            for key, opt in _prior_keys(r.choices):
                counts.setdefault(key, {})
                counts[key][opt] = counts[key].get(opt, 0.0) + w / len(top)
    prior: dict[str, dict[str, float]] = {}
    for key, c in counts.items():
        opts = options.get(key) or options.get(key.split("@", 1)[0]) or sorted(c)
        opts = sorted(set(opts) | set(c))
        total = sum(c.values())
        prior[key] = {o: (1.0 - floor) * c.get(o, 0.0) / total + floor / len(opts) for o in opts}
    warm = warm_start(by_task, sources, n_warm, space)
    return Priors(prior, warm, sources, sims, kind)


def _prior_keys(choices: Mapping[str, str]) -> list[tuple[str, str]]:
    """Each decision, plus its rule-level key for grammar decisions ``rule@path``."""
    out = list(choices.items())
    out += [(k.split("@", 1)[0], v) for k, v in choices.items() if "@" in k]
    return out


def warm_start(by_task: Mapping[str, Sequence[Record]], sources: Sequence[tuple[str, float]], n: int = 5,
               space: Any = None) -> list[str]:
    """The ``n`` candidates (each source's best) with the highest weighted mean percentile over the sources."""
    if n <= 0:
        return []
    pct = {}
    for t, _ in sources:
        s = scores_by_task(by_task[t]).get(t, {})
        keys = list(s)
        pct[t] = dict(zip(keys, percentiles([s[d] for d in keys])))
    pool: list[str] = []
    for t, _ in sources:
        for r in top_records(by_task[t], 0.0, max(2 * n, MIN_TOP)):
            if r.design not in pool:
                pool.append(r.design)
    total = sum(w for _, w in sources)
    score = {d: sum(w * pct[t].get(d, 0.5) for t, w in sources) / total for d in pool}
    out = []
    for d in sorted(pool, key=lambda d: (-score[d], pool.index(d))):
        if space is not None:
            try:
                d = space.encode(space.decode(d))
            except Exception:
                continue
        if d not in out:
            out.append(d)
        if len(out) == n:
            break
    return out


# ---- strategies (benchmark runner) ----------------------------------------------------------


@dataclass
class WarmStartStrategy:
    """Asks the warm-start designs first, then the inner strategy (told every result, never repeating a design)."""

    inner: Any
    space: Any
    warm: list[Any]
    _asked: set[str] = field(default_factory=set, repr=False)
    _known: dict[str, tuple[float, ...]] = field(default_factory=dict, repr=False)

    def ask(self) -> Any:
        """The next unasked warm-start design, else the inner strategy's next new design."""
        while self.warm:
            x = self.warm.pop(0)
            key = self.space.encode(x)
            if key not in self._asked:
                self._asked.add(key)
                return x
        x = self.inner.ask()
        for _ in range(10):
            key = self.space.encode(x)
            if key not in self._asked:
                break
            if key in self._known:
                self.inner.tell(x, self._known[key])
            x = self.inner.ask()
        self._asked.add(self.space.encode(x))
        return x

    def observe(self, design: Any, objectives: Sequence[float]) -> None:
        """A design evaluated elsewhere (an anchor, an earlier trial): told, and never asked again."""
        self._asked.add(self.space.encode(design))
        self.tell(design, objectives)

    def tell(self, design: Any, objectives: Sequence[float]) -> None:
        """Forward a result to the inner strategy."""
        self._known[self.space.encode(design)] = tuple(objectives)
        self.inner.tell(design, objectives)


def with_priors(factory: Callable[[Any, Sequence[str], int], Any], prior: Mapping[str, Mapping[str, float]] | None,
                warm: Sequence[str] = ()) -> Callable[[Any, Sequence[str], int], Any]:
    """A strategy factory whose strategies sample from ``prior`` (where they take one) and ask ``warm`` first."""

    def make(space: Any, directions: Sequence[str], seed: int) -> Any:
        inner = factory(space, directions, seed)
        if prior is not None and hasattr(inner, "prior"):
            inner.prior = {k: dict(v) for k, v in prior.items()}
        designs = [space.decode(s) for s in warm]
        study = getattr(inner, "_study", None)
        if study is not None and hasattr(space, "sample_with") and designs:
            for x in designs:
                study.enqueue_trial({str(k): v for k, v in space.choices(x).items()})
            designs = []
        return WarmStartStrategy(inner, space, designs)

    return make


# ---- search runs ----------------------------------------------------------------------------


def target_similarities(bank: Bank, tasks: Sequence[str], target: Sequence[float] | None, kind: str = "probe"
                        ) -> dict[str, float] | None:
    """Similarity to ``target`` of each bank task with an embedding of ``kind`` (``None`` when none compares)."""
    if target is None:
        return None
    sims = {}
    for t in tasks:
        vec = bank.embeddings.get(t, {}).get(kind)
        if vec is not None and len(vec) == len(target):
            sims[t] = similarity(target, vec)
    return sims or None


def bank_for(setting: Any, cfg: Any, runs_root: Path) -> tuple[Bank | None, Path]:
    """The bank named by ``search.priors`` (``"auto"``/true: the local bank; ``None`` if it does not exist yet)."""
    from nasmtl.config import ConfigError

    if setting is True or setting == "auto":
        path = local_bank_path(runs_root)
        if not path.exists():
            return None, path
    else:
        path = cfg.resolve(str(setting))
        if not path.is_file():
            raise ConfigError(f"{cfg.source}: search.priors: no bank file {setting!r} (looked in {path.parent})")
    try:
        return Bank.load(path), path
    except BankError as e:
        raise ConfigError(str(e)) from None


def apply_priors(run: Any, space: Any, proposer: Any, data: Any = None,
                 progress: Callable[[str], None] | None = None) -> Priors | None:
    """Apply ``search.priors`` to a run: enqueue warm starts (fresh study), set sampling priors, record the sources."""
    cfg = run.config
    setting = cfg.search.priors
    if setting is False or setting is None:
        return None
    say = progress or (lambda line: None)
    stored = run.study.user_attrs.get("priors")
    if stored:
        priors = Priors.from_json(stored)
    else:
        bank, path = bank_for(setting, cfg, run.dir.parent)
        if bank is None:
            say(f"priors: no bank at {path} yet; starting without priors")
            return None
        own = run_source(run.dir)
        by_task = {t: [r for r in rs if r.source != own] for t, rs in bank.by_task(space.name).items()}
        by_task = {t: rs for t, rs in by_task.items() if rs}
        if not by_task:
            say(f"priors: bank {path} holds no designs of space {space.name!r}; starting without priors")
            return None
        target = None
        if data is not None:
            from nasmtl.priors.embedding import probe_embedding

            target = probe_embedding(data, cfg.tasks)
        sims = target_similarities(bank, list(by_task), target)
        priors = transfer(by_task, sims, space=space, kind="probe" if sims else "uniform")
        priors.bank = str(path)
        if not run.study.get_trials(deepcopy=False):
            enqueue_warm_start(run.study, space, priors.warm_start, cfg.search.sampler)
        run.study.set_user_attr("priors", priors.to_json())
        write_json(RunDir(run.dir).priors_file, priors.to_json())
    set_prior(proposer, priors.prior, cfg.search.sampler)
    say(priors.summary())
    return priors


def enqueue_warm_start(study: Any, space: Any, designs: Sequence[str], sampler: str) -> None:
    """Enqueue designs as the next trials: as parameters for optuna's model-based samplers, else as designs."""
    for s in designs:
        x = space.decode(s)
        if sampler in ("tpe", "nsga2", "nsga3") and hasattr(space, "sample_with"):
            study.enqueue_trial({str(k): v for k, v in space.choices(x).items()})
        else:
            study.enqueue_trial({}, user_attrs={"design": space.encode(x)})


def set_prior(proposer: Any, prior: Mapping[str, Mapping[str, float]], sampler: str) -> None:
    """Let the proposer sample from ``prior``: the evolution population, or ``random`` draws."""
    strategy = getattr(proposer, "strategy", None)
    if strategy is not None and hasattr(strategy, "prior"):
        strategy.prior = {k: dict(v) for k, v in prior.items()}
    elif sampler == "random" and hasattr(proposer, "prior"):
        proposer.prior = {k: dict(v) for k, v in prior.items()}


def bank_after_run(run: Any, evaluator: Any = None, progress: Callable[[str], None] | None = None) -> Path | None:
    """Add a finished run's trials (and its task's probe embedding) to the local bank; a failure is only reported."""
    say = progress or (lambda line: None)
    path = local_bank_path(run.dir.parent)
    try:
        bank = Bank.open(path)
        n = bank.update_from_run(run.dir, run.storage)
        data = getattr(evaluator, "data", None)
        if data is not None and n:
            from nasmtl.priors.embedding import probe_embedding

            bank.set_embedding(task_id(run.config), "probe", probe_embedding(data, run.config.tasks).tolist())
        bank.save(path)
    except Exception as e:
        say(f"bank: {path} not updated ({type(e).__name__}: {first_line(e, None, empty='')})")
        return None
    say(f"bank: {n} record(s) of this run in {path}")
    return path
