"""``run_search(augment=fn)``: the function trains the trials and the final phase, and a run without it is unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import nasmtl
from nasmtl.data import DataError
from tests.conftest import TINY_RUN

FINAL = "\n[final]\nmembers = 1\nsteps = 3\nbatch_size = 24\n"


def _values(run: nasmtl.SearchRun) -> list[tuple[float, ...]]:
    """Objective values of every completed trial, by trial number."""
    trials = run._run.study.get_trials(deepcopy=False)
    return [tuple(t.values) for t in sorted(trials, key=lambda t: t.number) if t.state.name == "COMPLETE"]


def _outputs(run: nasmtl.SearchRun, final: bool) -> list[np.ndarray]:
    """Outputs in onnxruntime, on fixed real inputs, of the found final model or the first Pareto trial's
    own model: they differ when the weights do (timings and chance-level accuracies do not show it)."""
    from nasmtl.data import multimnist
    from nasmtl.onnx import run_onnx

    if final:
        (rec,) = [r for r in run.final() if r.kind == "found"]
        path = run.dir / rec.onnx
    else:
        path = run.dir / "trials" / f"{run.pareto()[0].trial:05d}.onnx"
    outs = run_onnx(str(path), multimnist(seed=0, n_train=8, n_val=8, n_test=16).test.x)
    return [outs[k] for k in sorted(outs)]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_run_search_augment_reaches_trials_and_final_phase(root: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.toml"
    tiny = TINY_RUN.format(root=root, trials=1).replace("trial_timeout = 120", "trial_timeout = 120\nbaselines = []")
    cfg.write_text(tiny + FINAL)
    runs = tmp_path / "runs"
    seen: list[int] = []

    def mirror(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        seen.append(x.shape[0])
        return torch.flip(x, dims=(-1,)) + 0.5 * torch.randn(x.shape, generator=g)

    plain = nasmtl.run_search(cfg, name="plain", runs=runs)
    augmented = nasmtl.run_search(cfg, name="aug", runs=runs, augment=mirror)
    assert 40 in seen and 24 in seen                      # trial batches ([train]) and final batches ([final])
    after = nasmtl.run_search(cfg, name="after", runs=runs)
    assert _values(after) == _values(plain)               # without augment: as before, nothing left set
    for final in (False, True):
        assert _same(_outputs(after, final), _outputs(plain, final))
        assert not _same(_outputs(augmented, final), _outputs(plain, final))
    calls = len(seen)
    rec = augmented.retrain(_trial(augmented), steps=2, force=True)
    assert rec.steps == 2 and len(seen) == calls + 2      # retrain of the returned run trains with it too


def _trial(run: nasmtl.SearchRun) -> int:
    return run.pareto()[0].trial


def test_run_search_augment_must_be_callable(root: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_RUN.format(root=root, trials=1))
    with pytest.raises(DataError, match=r"run_search\(augment=\.\.\.\): expected a function \(batch, generator\) "
                                        r"-> batch, got int 3"):
        nasmtl.run_search(cfg, name="bad", runs=tmp_path / "runs", augment=3)  # type: ignore[arg-type]
    assert not (tmp_path / "runs" / "bad").exists()
