"""Reports of a run: Pareto table, pairwise Pareto scatter plots, hypervolume curve, one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import TrialState

from nasmtl.run.rundir import RunDir
from nasmtl.search.engine import failed_trials, pareto_trials, study_hypervolume, trained_completes
from nasmtl.search.final import FinalRecord, Verdict, baseline_rows, final_budget, load_final, verdicts


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
    final_budget: str = ""
    """The budget the final records were trained with (``FinalBudget.describe``)."""
    final: list[FinalRecord] = field(default_factory=list)
    """Finalists and baselines trained from scratch at ``final_budget``, measured on the test split."""
    verdicts: list[Verdict] = field(default_factory=list)
    """For each baseline (as designed and all int8), whether a found model beats it on test."""

    def final_columns(self) -> list[str]:
        """The measures shown for final models: the run's objectives, then latency, params and MACs."""
        extra = [k for k in ("latency_ms", "params", "macs") if k not in self.objectives]
        return [*self.objectives, *extra]

    def final_rows(self) -> list[tuple[str, dict[str, float]]]:
        """``(label, test values)`` of each found model, then each baseline as designed and all int8."""
        rows = [(f"trial {r.trial}", r.test) for r in self.final if r.kind == "found"]
        return rows + baseline_rows(self.final)

    def final_table(self) -> str:
        """The final models on the test split and the verdicts, as plain text ('' without final records)."""
        if not self.final:
            return ""
        cols = self.final_columns()
        rows = [[label, *(_fmt(v[c]) if c in v else "-" for c in cols)] for label, v in self.final_rows()]
        heads = ["model", *cols]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
        lines = [f"final training from scratch ({self.final_budget}), test split:",
                 "  ".join(h.ljust(w) for h, w in zip(heads, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        lines += [v.text for v in self.verdicts]
        return "\n".join(lines)

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
                "priors": self.priors,
                "final": {"budget": self.final_budget,
                          "models": [{"name": r.name, "kind": r.kind, "trial": r.trial, "design": r.design,
                                      "test": r.test, "val": r.val, "variants": r.variants, "onnx": r.onnx}
                                     for r in self.final],
                          "verdicts": [{"found": v.found, "baseline": v.baseline, "beats": v.beats, "text": v.text}
                                       for v in self.verdicts]}}

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
    from nasmtl.run.lifecycle import open_run

    run = open_run(Path(run_dir), storage_url)
    study, cfg, name = run.study, run.config, run.name
    trials = study.get_trials(deepcopy=False)
    names, dirs = cfg.objective_names, cfg.directions
    members = [ParetoMember(t.number, dict(zip(names, t.values)), t.user_attrs.get("design", ""), _baselines(t))
               for t in pareto_trials(trials, dirs)]
    done = sorted(trained_completes(trials), key=lambda t: (t.datetime_complete, t.number))
    curve = [(t.number, study_hypervolume(done[: i + 1], cfg.objectives)) for i, t in enumerate(done)]
    by_tag = load_final(run.dir)
    tag = final_budget(cfg).tag
    if tag not in by_tag and by_tag:
        tag = max(by_tag, key=lambda k: len(by_tag[k]))
    final = sorted(by_tag.get(tag, []), key=lambda r: (r.kind != "found", r.order, r.trial or 0, r.name))
    described = _describe_tag(final)
    return RunReport(name, names, dirs, len(trained_completes(trials)),
                     len(failed_trials(trials)),
                     sum(t.state == TrialState.PRUNED for t in trials),
                     study_hypervolume(trials, cfg.objectives), members, curve,
                     [(t.number, list(t.values)) for t in done], priors=study.user_attrs.get("priors"),
                     final_budget=described, final=final, verdicts=verdicts(final, cfg.objectives))


def _describe_tag(records: list[FinalRecord]) -> str:
    """The budget of a group of final records, in words."""
    if not records:
        return ""
    from nasmtl.search.final import FinalBudget

    return FinalBudget(**records[0].budget).describe()


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
    if rep.final:
        paths.append(_final_plot(rep, out_dir, plt))
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


def _final_plot(rep: RunReport, out_dir: Path, plt: Any) -> Path:
    """Test quality (mean of the task objectives) against the first cost objective of each final model."""
    cols = rep.final_columns()
    quality = [o for o, d in zip(rep.objectives, rep.directions) if "." in o and d == "maximize"
               and o.split(".", 1)[1] not in ("params", "macs", "bytes", "latency_ms")]
    cost = next((o for o, d in zip(rep.objectives, rep.directions) if d == "minimize"), "bytes")
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for label, v in rep.final_rows():
        if cost not in v or not quality or any(q not in v for q in quality):
            continue
        y = float(np.mean([v[q] for q in quality]))
        found = label.startswith("trial ")
        ax.scatter([v[cost]], [y], s=40 if found else 30, marker="o" if found else "s",
                   c="#d62728" if found else "#1f77b4")
        ax.annotate(label, (v[cost], y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(f"{cost} (test file; log scale)")
    ax.set_ylabel("mean of " + ", ".join(quality) if len(quality) > 1 else (quality[0] if quality else cols[0]))
    ax.set_title("final models, test split (red: found, blue: baselines)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    p = out_dir / "final_models.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p


def _final_html(rep: RunReport) -> str:
    """The final-models section of the HTML page: a table and one verdict line per baseline."""
    if not rep.final:
        return ("<h2>Final models</h2><p>No final training yet: <code>nasmtl retrain RUN --pareto --with-baselines"
                "</code> trains the Pareto members and the baselines from scratch at the final budget.</p>")
    cols = rep.final_columns()
    heads = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        f"<tr><td>{'<b>' if label.startswith('trial ') else ''}{html.escape(label)}"
        f"{'</b>' if label.startswith('trial ') else ''}</td>"
        + "".join(f"<td>{_fmt(v[c]) if c in v else '-'}</td>" for c in cols) + "</tr>"
        for label, v in rep.final_rows())
    lines = "".join(f'<li style="color:{"#1a7f37" if v.beats else "#b00020"}">{html.escape(v.text)}</li>'
                    for v in rep.verdicts)
    return (f"<h2>Final models (trained from scratch, {html.escape(rep.final_budget)}; test split)</h2>"
            f"<table><tr><th>model</th>{heads}</tr>{body}</table><ul>{lines}</ul>")


def _picture(path: Path | None) -> str:
    """A network diagram folded under its design string (inlined SVG), or '' without one."""
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<details><summary>network</summary><img alt="{html.escape(path.stem)}" style="max-width:100%" '
            f'src="data:image/svg+xml;base64,{data}"></details>')


def write_html(rep: RunReport, images: list[Path], path: Path, pictures: dict[int, Path] | None = None) -> Path:
    """One self-contained HTML page (plots and network diagrams inlined as base64)."""
    pictures = pictures or {}
    rows = "".join(
        "<tr><td>" + str(m.trial) + "</td>" + "".join(f"<td>{_fmt(m.objectives[o])}</td>" for o in rep.objectives)
        + f"<td>{html.escape(baseline_text(m, rep.objectives))}</td>"
        + f"<td>{_picture(pictures.get(m.trial))}<code>{html.escape(m.design)}</code></td></tr>" for m in rep.pareto)
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
{_final_html(rep)}
<h2>Pareto members (search, validation split)</h2><table><tr><th>trial</th>{heads}<th>same model: fp32; all-int8</th><th>design</th></tr>{rows}</table>
<h2>Plots</h2>{imgs}</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path


MAX_PICTURES = 16
"""Pareto members drawn per report (the first by trial number); ``nasmtl show`` draws any other."""


def write_pictures(rep: RunReport, run_dir: Path, out_dir: Path) -> dict[int, Path]:
    """An SVG diagram of each Pareto member's network (``report/arch_NNNNN.svg``, precisions coloured).

    A design that no longer builds (a space file changed since the run) is left out, never fatal.
    """
    from nasmtl.arch.draw import draw_arch
    from nasmtl.data import load_dataset
    from nasmtl.run.lifecycle import open_run
    from nasmtl.search.evaluate import load_space
    from nasmtl.spaces.joint import build_network

    if not rep.pareto:
        return {}
    cfg = open_run(Path(run_dir)).config
    try:
        space = load_space(cfg)
        data = load_dataset(dict(cfg.data), cfg.base_dir)
    except Exception:
        return {}
    names = list(cfg.tasks) if cfg.tasks is not None else data.task_names
    heads = {n: data.task(n).n_outputs for n in names}
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = {}
    for m in rep.pareto[:MAX_PICTURES]:
        try:
            design = space.decode(m.design)
            arch = build_network(space, design, tuple(data.input_shape), heads, cfg.space.head)
            drawn[m.trial] = draw_arch(arch, out_dir / f"arch_{m.trial:05d}.svg",
                                       precisions=getattr(design, "quant", None), title=f"trial {m.trial}")
        except Exception:
            continue
    return drawn


def write_report(run_dir: Path, storage_url: str | None = None) -> tuple[RunReport, list[Path]]:
    """Write ``report/*.png``, ``report/arch_*.svg`` and ``report.html`` into the run directory."""
    files = RunDir(Path(run_dir))
    rep = load_report(run_dir, storage_url)
    images = write_plots(rep, files.report_dir)
    pictures = write_pictures(rep, files.root, files.report_dir)
    page = write_html(rep, images, files.report_html, pictures)
    return rep, [*images, *pictures.values(), page]
