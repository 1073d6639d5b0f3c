"""Reports of a run: Pareto table, pairwise Pareto scatter plots, hypervolume curve, one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import TrialState

from nasmtl.config import RunConfig
from nasmtl.search.engine import pareto_trials, study_hypervolume, trained_completes


@dataclass
class ParetoMember:
    """One Pareto member: trial number, objective values by name, canonical design string."""

    trial: int
    objectives: dict[str, float]
    design: str
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    """The same trained model in fp32 and all int8-static, ``{"fp32": {...}, "int8": {...}}`` (quantized runs)."""


@dataclass
class RunReport:
    """What a run found: trial counts, hypervolume, Pareto members and the hypervolume after each trial."""

    name: str
    objectives: list[str]
    directions: list[str]
    completed: int
    failed: int
    pruned: int
    hypervolume: float
    pareto: list[ParetoMember]
    hv_curve: list[tuple[int, float]] = field(default_factory=list)
    points: list[tuple[int, list[float]]] = field(default_factory=list)
    priors: dict[str, Any] | None = None
    """Transferred priors of the run (source tasks and weights, warm-start designs), if it used them."""

    def priors_line(self) -> str:
        """Which tasks the priors came from and how much each weighed ('' without priors)."""
        if not self.priors:
            return ""
        src = ", ".join(f"{t} ({float(w):.2f})" for t, w in self.priors.get("sources", []))
        return (f"priors ({self.priors.get('kind', '')}, bank {self.priors.get('bank', '')}): {src}; "
                f"{len(self.priors.get('warm_start', []))} warm-start design(s)")

    def to_json(self) -> dict[str, Any]:
        """``completed``, ``failed``, ``hypervolume`` and ``pareto`` (plus a few extras) as plain values."""
        return {"name": self.name, "completed": self.completed, "failed": self.failed, "pruned": self.pruned,
                "hypervolume": self.hypervolume, "objectives": dict(zip(self.objectives, self.directions)),
                "pareto": [{"trial": m.trial, "objectives": m.objectives, "design": m.design,
                            **({"baselines": m.baselines} if m.baselines else {})} for m in self.pareto],
                "priors": self.priors}

    def table(self) -> str:
        """A plain-text table of the Pareto members."""
        heads = ["trial", *self.objectives, "design"]
        rows = [[str(m.trial), *(_fmt(m.objectives[o]) for o in self.objectives), m.design] for m in self.pareto]
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(heads[:-1])]
        lines = ["  ".join(h.ljust(w) for h, w in zip(heads[:-1], widths)) + "  design"]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
        lines += [f"trial {m.trial} beside its own model unquantized and all-int8: {baseline_text(m, self.objectives)}"
                  for m in self.pareto if m.baselines]
        if self.priors:
            lines.append(self.priors_line())
        return "\n".join(lines)


def baseline_text(m: ParetoMember, objectives: list[str]) -> str:
    """``fp32: o1 v1, o2 v2; int8: ...`` over the objectives a baseline has."""
    return "; ".join(f"{kind}: " + ", ".join(f"{o} {_fmt(vals[o])}" for o in objectives if o in vals)
                     for kind, vals in m.baselines.items())


def _baselines(t: Any) -> dict[str, dict[str, float]]:
    """``value:fp32.*`` and ``value:int8.*`` user attrs of a trial, by kind."""
    out: dict[str, dict[str, float]] = {}
    for k, v in t.user_attrs.items():
        for kind in ("fp32", "int8"):
            if k.startswith(f"value:{kind}."):
                out.setdefault(kind, {})[k[len(f"value:{kind}."):]] = float(v)
    return out


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.4g}"


def load_report(run_dir: Path, storage_url: str | None = None) -> RunReport:
    """The report of run directory ``run_dir`` (its storage from ``run.json`` unless given)."""
    import optuna

    from nasmtl.search.run import RUN_FILE
    from nasmtl.search.storage import StorageError, open_storage

    run_dir = Path(run_dir)
    meta = run_dir / RUN_FILE
    if not meta.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no {RUN_FILE})")
    info = json.loads(meta.read_text())
    storage = open_storage(storage_url or info.get("storage"), run_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = info["name"]
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise StorageError(f"{run_dir}: its storage holds no study {name!r}") from None
    cfg = RunConfig.from_dict(study.user_attrs["config"], f"study {name!r}")
    trials = study.get_trials(deepcopy=False)
    names, dirs = cfg.objective_names, cfg.directions
    members = [ParetoMember(t.number, dict(zip(names, t.values)), t.user_attrs.get("design", ""), _baselines(t))
               for t in pareto_trials(trials, dirs)]
    done = sorted(trained_completes(trials), key=lambda t: (t.datetime_complete, t.number))
    curve = [(t.number, study_hypervolume(done[: i + 1], cfg.objectives)) for i, t in enumerate(done)]
    return RunReport(name, names, dirs, len(trained_completes(trials)),
                     sum(t.state == TrialState.FAIL for t in trials),
                     sum(t.state == TrialState.PRUNED for t in trials),
                     study_hypervolume(trials, cfg.objectives), members, curve,
                     [(t.number, list(t.values)) for t in done], priors=study.user_attrs.get("priors"))


def write_plots(rep: RunReport, out_dir: Path) -> list[Path]:
    """PNG files: one Pareto scatter per pair of objectives (front highlighted) and the hypervolume curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    pts = np.array([v for _, v in rep.points], dtype=float).reshape(-1, len(rep.objectives))
    front = {m.trial for m in rep.pareto}
    on = np.array([n in front for n, _ in rep.points], dtype=bool)
    pairs = list(itertools.combinations(range(len(rep.objectives)), 2)) or [(0, 0)]
    for i, j in pairs:
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(pts[~on, i], pts[~on, j], s=14, c="#999999", label="trials")
        if on.any():
            sel = pts[on]
            order = np.argsort(sel[:, i])
            ax.plot(sel[order, i], sel[order, j], "-o", c="#d62728", ms=5, label="Pareto front")
        ax.set_xlabel(f"{rep.objectives[i]} ({rep.directions[i][:3]})")
        ax.set_ylabel(f"{rep.objectives[j]} ({rep.directions[j][:3]})")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        p = out_dir / f"pareto_{rep.objectives[i]}__{rep.objectives[j]}.png".replace("/", "_")
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if rep.hv_curve:
        ax.plot(range(1, len(rep.hv_curve) + 1), [h for _, h in rep.hv_curve], "-", c="#1f77b4")
    ax.set_xlabel("completed trials")
    ax.set_ylabel("hypervolume")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    p = out_dir / "hypervolume.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    paths.append(p)
    return paths


def write_html(rep: RunReport, images: list[Path], path: Path) -> Path:
    """One self-contained HTML page (images inlined as base64)."""
    rows = "".join(
        "<tr><td>" + str(m.trial) + "</td>" + "".join(f"<td>{_fmt(m.objectives[o])}</td>" for o in rep.objectives)
        + f"<td>{html.escape(baseline_text(m, rep.objectives))}</td>"
        + f"<td><code>{html.escape(m.design)}</code></td></tr>" for m in rep.pareto)
    heads = "".join(f"<th>{html.escape(o)} ({d[:3]})</th>" for o, d in zip(rep.objectives, rep.directions))
    imgs = "".join(f'<img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
                   f'{base64.b64encode(p.read_bytes()).decode()}">' for p in images)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>nasmtl run {html.escape(rep.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:left}}
tr:nth-child(even){{background:#f4f4f4}}code{{font-size:85%}}img{{margin:4px}}</style></head><body>
<h1>Run {html.escape(rep.name)}</h1>
<p>{rep.completed} completed, {rep.failed} failed, {rep.pruned} stopped early; hypervolume {rep.hypervolume:.6g};
{len(rep.pareto)} Pareto member(s).</p>
{f"<p>{html.escape(rep.priors_line())}</p>" if rep.priors else ""}
<h2>Pareto members</h2><table><tr><th>trial</th>{heads}<th>same model: fp32; all-int8</th><th>design</th></tr>{rows}</table>
<h2>Plots</h2>{imgs}</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path


def write_report(run_dir: Path, storage_url: str | None = None) -> tuple[RunReport, list[Path]]:
    """Write ``report/*.png`` and ``report.html`` into the run directory; returns the report and files."""
    rep = load_report(run_dir, storage_url)
    images = write_plots(rep, Path(run_dir) / "report")
    page = write_html(rep, images, Path(run_dir) / "report.html")
    return rep, [*images, page]
