"""Data larger than memory: a folder of ``.npy`` files read batch by batch, and map-style data written to one."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import nasmtl
from nasmtl.data import DataError, load_dataset, multimnist
from nasmtl.data.mapstyle import write_npz
from nasmtl.data.rows import Rows
from nasmtl.train import Budget, TrainConfig, predict, train
from tests.conftest import TINY_RUN
from tests.test_api import _Digits
from tests.test_train import TinyNet


def _arrays(data) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Inputs, targets and split codes of a data set's three splits, one after the other."""
    parts = [data.train, data.val, data.test]
    x = np.concatenate([p.x for p in parts])
    y = {k: np.concatenate([p.y[k] for p in parts]) for k in data.train.y}
    split = np.concatenate([np.full(len(p), code, np.int8) for code, p in enumerate(parts)])
    return x, y, split


def _write_dir(folder: Path, x: np.ndarray, y: dict[str, np.ndarray], split: np.ndarray | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "x.npy", x)
    for k, v in y.items():
        np.save(folder / f"{k}.npy", v)
    if split is not None:
        np.save(folder / "split.npy", split)
    return folder


def test_npy_folder_reads_batches_and_trains_like_the_npz_file(tmp_path: Path) -> None:
    x, y, split = _arrays(multimnist(seed=0, n_train=300, n_val=80, n_test=80))
    write_npz(tmp_path / "d.npz", x, y, split)
    _write_dir(tmp_path / "d", x, y, split)
    mem = load_dataset({"kind": "npz", "path": str(tmp_path / "d.npz")})
    disk = load_dataset({"kind": "npy", "path": str(tmp_path / "d")})
    assert isinstance(disk.train.x, Rows) and isinstance(disk.train.x.base, np.memmap)
    assert [len(getattr(disk, s)) for s in ("train", "val", "test")] == [300, 80, 80]
    assert disk.input_shape == mem.input_shape and disk.task_names == mem.task_names
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(np.asarray(getattr(disk, s).x), getattr(mem, s).x)
    idx = np.array([7, 2, 250, 2])                                       # any order, repeats: as asked
    np.testing.assert_array_equal(disk.train.x[idx], mem.train.x[idx])
    cfg = TrainConfig(budget=Budget(steps=12), batch_size=32, seed=3, eval_batch_size=50)
    a = train(TinyNet(mem.tasks), mem, cfg)
    b = train(TinyNet(disk.tasks), disk, cfg)
    assert a.metrics == b.metrics and [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    pa, pb = predict(TinyNet(mem.tasks), mem.test.x, 33), predict(TinyNet(disk.tasks), disk.test.x, 33)
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    write_npz(tmp_path / "r.npz", x, y)                                   # no split codes: a seeded random split
    by_seed = load_dataset({"kind": "npz", "path": str(tmp_path / "r.npz"), "seed": 4})
    random = load_dataset({"kind": "npy", "path": str(_write_dir(tmp_path / "r", x, y, None)), "seed": 4})
    np.testing.assert_array_equal(np.asarray(random.val.x), by_seed.val.x)
    assert "values in [0, 1]" in disk.preprocessing["inputs"]["scaling"]


def test_npy_folder_errors_name_the_file_and_place(tmp_path: Path) -> None:
    x, y, _ = _arrays(multimnist(seed=0, n_train=40, n_val=10, n_test=10))
    with pytest.raises(DataError, match="not a folder of .npy files"):
        load_dataset({"kind": "npy", "path": str(tmp_path / "none")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no x.npy"):
        load_dataset({"kind": "npy", "path": str(tmp_path / "empty")})
    bad = x.copy()
    bad[17, 0, 3, 4] = np.nan
    with pytest.raises(DataError, match=r"nan/x.npy: NaN or infinite value in row 17"):
        load_dataset({"kind": "npy", "path": str(_write_dir(tmp_path / "nan", bad, y, None))})
    folder = _write_dir(tmp_path / "short", x, {"left": y["left"][:-3]}, None)
    with pytest.raises(DataError, match=r"short: task 'left' has 57 labels but there are 60 examples"):
        load_dataset({"kind": "npy", "path": str(folder)})
    with pytest.raises(DataError, match=r"short: no file right.npy for task 'right' \(tasks: left\)"):
        load_dataset({"kind": "npy", "path": str(folder), "tasks": {"right": "classification"}})
    np.save(folder / "left.npy", np.array([{"a": 1}] * 60, dtype=object))
    with pytest.raises(DataError, match=r"short/left.npy: not a readable .npy array"):
        load_dataset({"kind": "npy", "path": str(folder)})


def test_large_map_style_data_is_written_item_by_item(root: Path, tmp_path: Path, monkeypatch) -> None:
    import nasmtl.data.mapstyle as mapstyle

    monkeypatch.setattr(mapstyle, "STREAM_BYTES", 0)                     # every data set counts as large here
    real = multimnist(seed=0, n_train=120, n_val=60, n_test=60)
    splits = {s: _Digits(getattr(real, s)) for s in ("train", "val", "test")}
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_RUN.format(root=root, trials=1))
    runs = tmp_path / "runs"
    run = nasmtl.run_search(cfg, data=splits, name="big", runs=runs, final=False)
    assert run.config.data["kind"] == "npy" and (runs / "big" / "data" / "x.npy").is_file()
    assert not (runs / "big" / "data.npz").exists()
    seen = load_dataset(run.config.data)
    assert isinstance(seen.test.x, Rows)
    np.testing.assert_array_equal(np.asarray(seen.test.x), real.test.x)
    np.testing.assert_array_equal(seen.val.y["right"], real.val.y["right"])
    nasmtl.run_search(cfg, data=splits, name="big", runs=runs, trials=2, final=False)    # resume, same data
    with pytest.raises(DataError, match=r"big/data: run 'big' was made with other data"):
        nasmtl.run_search(cfg, data=dict(splits, test=_Digits(real.val)), name="big", runs=runs, final=False)


CHUNK = 5000
"""Real MultiMNIST pairs per seed in the large file below."""


def _large_multimnist(folder: Path, chunks: int) -> int:
    """A folder of ``chunks`` x 5,000 real MultiMNIST pairs (one seed each), written chunk by chunk; its bytes."""
    from numpy.lib.format import open_memmap

    folder.mkdir()
    n = chunks * CHUNK
    x = open_memmap(folder / "x.npy", mode="w+", dtype=np.float32, shape=(n, 1, 36, 36))
    left, right = np.empty(n, np.int64), np.empty(n, np.int64)
    for k in range(chunks):
        part = multimnist.__wrapped__(seed=100 + k, n_train=CHUNK, n_val=1, n_test=1).train
        x[k * CHUNK:(k + 1) * CHUNK] = part.x
        left[k * CHUNK:(k + 1) * CHUNK], right[k * CHUNK:(k + 1) * CHUNK] = part.y["left"], part.y["right"]
    x.flush()
    del x
    np.save(folder / "left.npy", left)
    np.save(folder / "right.npy", right)
    split = np.zeros(n, np.int8)
    split[-2 * CHUNK // 5:] = 1
    split[-CHUNK // 5:] = 2                                             # 1,000 val and 1,000 test pairs
    np.save(folder / "split.npy", split)
    return (folder / "x.npy").stat().st_size


def _run_toml(root: Path, folder: Path) -> str:
    """The tiny search on the ``.npy`` folder: a fixed int8 policy (calibration, onnxruntime evaluation) and a final phase."""
    return (TINY_RUN.format(root=root, trials=2)
            .replace('name = "multimnist"\nn_train = 120\nn_val = 60\nn_test = 60', f'kind = "npy"\npath = "{folder}"')
            .replace("epochs = 1", "steps = 10")
            .replace("max_macs = 300_000", 'max_macs = 300_000\nquant = "int8_static"')
            .replace("trial_timeout = 120", "trial_timeout = 300\nbaselines = []")
            + "\n[final]\nmembers = 1\nsteps = 5\n")


@pytest.mark.slow
def test_search_on_a_file_larger_than_its_traced_memory(root: Path, tmp_path: Path) -> None:
    size = _large_multimnist(tmp_path / "big", chunks=12)                 # 60,000 pairs: 311 MB of float32
    small = tmp_path / "small"                                          # its first 3,000 pairs, for a warm-up
    big = load_dataset({"kind": "npy", "path": str(tmp_path / "big")})
    _write_dir(small, np.asarray(big.train.x[:3000]), {k: v[:3000] for k, v in big.train.y.items()},
               np.repeat(np.array([0, 1, 2], np.int8), [2000, 500, 500]))
    (tmp_path / "small.toml").write_text(_run_toml(root, small))
    (tmp_path / "big.toml").write_text(_run_toml(root, tmp_path / "big"))
    nasmtl.run_search(tmp_path / "small.toml", name="warm", runs=tmp_path / "runs")   # lazy imports happen here
    tracemalloc.start()
    try:
        run = nasmtl.run_search(tmp_path / "big.toml", name="big", runs=tmp_path / "runs")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert run.pareto() and [r.kind for r in run.final()] == ["found"]
    print(f"x.npy {size / 2**20:.0f} MiB, peak traced memory of the search {peak / 2**20:.1f} MiB")
    assert peak < size / 10
