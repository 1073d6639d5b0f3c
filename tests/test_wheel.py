"""A built wheel works outside the repository: shipped grammars, spaces and predictors come with it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY_RUN

CONFIG = TINY_RUN.format(root=".", trials=1)
"""The tiny search with its grammar named relative to nowhere in particular: found among the shipped files."""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel and unpacked into a folder of its own (its dependencies: this venv's)."""
    setuptools = pytest.importorskip("setuptools", reason="building the wheel needs setuptools in this environment")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} here; pyproject.toml's build needs >= 77 "
                    "(pip install 'setuptools>=77')")
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            str(ROOT), "-w", str(out)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(out.glob("nasmtl-*.whl"))
    target = out / "site"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(target)
    assert {"nasmtl/_data/grammars/cnn.lark", "nasmtl/_data/search_spaces/nb201.toml",
            "nasmtl/_data/predictors/default.onnx"} <= set(names)
    return target


def _run(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(installed), OMP_NUM_THREADS="1")
    env.pop("NASMTL_BENCHMARKS", None)
    return subprocess.run([sys.executable, "-m", "nasmtl.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_wheel_imports_from_its_own_folder(installed: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(installed))
    where = subprocess.run([sys.executable, "-c", "import nasmtl, nasmtl.resources as r; print(nasmtl.__file__); "
                            "print(r.shipped_path('grammars/cnn.lark'))"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    lines = where.stdout.split()
    assert lines[0].startswith(str(installed)) and lines[1].startswith(str(installed / "nasmtl" / "_data"))


def test_sample_and_a_one_trial_search_from_another_directory(installed: Path, tmp_path: Path) -> None:
    sample = _run(installed, tmp_path, "sample", "grammars/cnn.lark", "-n", "2", "--input-shape", "1,28,28")
    assert sample.returncode == 0, sample.stderr[-2000:]
    assert sample.stdout.count("seq(") >= 2
    (tmp_path / "run.toml").write_text(CONFIG)
    search = _run(installed, tmp_path, "search", "run.toml", "--name", "w", "--runs", str(tmp_path / "runs"),
                  "--no-final", "--quiet")
    assert search.returncode == 0, search.stderr[-2000:]
    assert (tmp_path / "runs" / "w" / "trials" / "00000.onnx").is_file()
    predict = _run(installed, tmp_path, "predict", str(tmp_path / "runs" / "w" / "trials" / "00000.onnx"))
    assert predict.returncode == 0, predict.stderr[-2000:]
