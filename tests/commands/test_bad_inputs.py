"""The bad-input table: every case is one line on stderr naming the file and place, exit 2, no traceback,
and no run directory left behind by a search that could not start."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from nasmtl.cli import main

ROOT = Path(__file__).resolve().parents[2]

GRAMMAR = '''//@ start net
//@ input 4
net: "seq(" m "," m ")"
m: "relu" | "linear(out=" w ")"   //@ 1 2
w: "8" | "16"
'''

CONFIG = '''
[data]
{data}

[space]
grammar = "{root}/grammars/mlp.lark"

[[objectives]]
name = "{objective}"
direction = "maximize"
{bound}

[train]
steps = 2

[search]
trials = 1
bank = false
baselines = []
{search}
'''
MNIST_DATA = 'name = "multimnist"\nn_train = 40\nn_val = 10\nn_test = 10'


def config(tmp: Path, data: str = MNIST_DATA, objective: str = "left.accuracy", bound: str = "",
           search: str = "", extra: str = "") -> list[str]:
    p = tmp / "run.toml"
    p.write_text(CONFIG.format(root=ROOT, data=data, objective=objective, bound=bound, search=search) + extra)
    return ["search", str(p)]


def csv_config(tmp: Path, text: str, tasks: str = '{ y = "classification" }') -> list[str]:
    (tmp / "d.csv").write_text(text)
    return config(tmp, f'kind = "csv"\npath = "d.csv"\ntasks = {tasks}', objective="y.accuracy")


def npz_config(tmp: Path, **arrays: np.ndarray) -> list[str]:
    np.savez(tmp / "d.npz", **arrays)
    return config(tmp, 'kind = "npz"\npath = "d.npz"', objective="y.accuracy")


def grammar(tmp: Path, text: str | bytes) -> list[str]:
    p = tmp / "g.lark"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return ["sample", str(p), "-n", "1"]


def onnx_file(tmp: Path, data: bytes) -> list[str]:
    (tmp / "m.onnx").write_bytes(data)
    return ["predict", str(tmp / "m.onnx")]


def _no_inputs_model(tmp: Path) -> list[str]:
    import onnx
    from onnx import TensorProto, helper

    c = helper.make_node("Constant", [], ["y"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))
    g = helper.make_graph([c], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(g), str(tmp / "m.onnx"))
    return ["predict", str(tmp / "m.onnx")]


def _good_onnx_bytes(tmp: Path) -> bytes:
    import torch

    from nasmtl.onnx import export_onnx

    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"y": self.l(x)}

    export_onnx(M(), (4,), tmp / "good.onnx", ["y"])
    return (tmp / "good.onnx").read_bytes()


def _idx_truncated(tmp: Path) -> list[str]:
    (tmp / "img").write_bytes(struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">III", 10, 28, 28) + b"\0" * 100)
    (tmp / "lab").write_bytes(struct.pack(">HBB", 0, 0x08, 1) + struct.pack(">I", 10) + bytes(range(10)))
    return config(tmp, 'kind = "idx"\nimages = "img"\nlabels = "lab"', objective="label.accuracy")


CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    # grammars
    ("grammar syntax", lambda t: grammar(t, GRAMMAR.replace('"8" | "16"', '"8" | "16')), "g.lark:5:"),
    ("grammar undefined rule", lambda t: grammar(t, GRAMMAR.replace('w: "8"', 'width: "8"')), "is used but not defined"),
    ("grammar unknown op", lambda t: grammar(t, GRAMMAR.replace('"relu"', '"relux"')), "unknown op 'relux'"),
    ("grammar bad probabilities", lambda t: grammar(t, GRAMMAR.replace("//@ 1 2", "//@ 1 -2")), "g.lark:4:"),
    ("grammar never terminates", lambda t: grammar(t, GRAMMAR + 'loop: "seq(" loop "," m ")"\n'), "never terminate"),
    ("grammar empty", lambda t: grammar(t, ""), "g.lark"),
    ("grammar binary", lambda t: grammar(t, bytes(range(256)) * 4), "g.lark"),
    ("grammar huge", lambda t: grammar(t, GRAMMAR + "// filler\n" * 300_000), "g.lark"),
    ("grammar is a directory", lambda t: ["sample", str(t)], "work"),
    ("grammar missing", lambda t: ["sample", str(t / "nope.lark")], "nope.lark"),
    # configs
    ("config unknown key", lambda t: config(t, search="samplr = \"random\""), "unknown key 'search.samplr'"),
    ("config wrong type", lambda t: config(t, search="population = \"ten\""), "search.population must be an integer"),
    ("config TOML syntax", lambda t: config(t, extra="\n[train\n"), "not valid TOML"),
    ("config impossible objective", lambda t: config(t, objective="middle.accuracy"), "no task 'middle'"),
    ("config unknown metric", lambda t: config(t, objective="left.f1"), "has no metric 'f1'"),
    ("config bad bound", lambda t: config(t, bound='bound = "high"'), "objectives[0].bound"),
    ("config bad schedule", lambda t: config(t, search="seed = 1\n[search.fidelity]\neta = 0.5"), "eta must be > 1"),
    ("config negative population", lambda t: config(t, search="population = -3"), "search.population must be > 0"),
    ("config unknown sampler", lambda t: config(t, search='sampler = "annealing"'), "search.sampler 'annealing'"),
    ("config negative finalists", lambda t: config(t, extra='\n[final]\nmembers = -2\n'), "final.members"),
    ("config unknown device", lambda t: _device(t), "train.device"),
    ("config missing grammar", lambda t: _missing_grammar(t), "no grammar file"),
    # data files
    ("csv missing column", lambda t: csv_config(t, "a,b\n1,2\n3,4\n5,6\n", '{ y = "classification" }'), "no column 'y'"),
    ("csv text in a number column", lambda t: csv_config(t, "a,y\n1,0\nabc,1\n2,0\n3,1\n4,0\n"),
     "non-numeric value 'abc'"),
    ("csv NaN label", lambda t: csv_config(t, "a,y\n1,0\n2,NaN\n3,1\n4,0\n5,1\n"), "line 3"),
    ("csv empty file", lambda t: csv_config(t, ""), "empty file"),
    ("csv ragged row", lambda t: csv_config(t, "a,y\n1,0\n2,1,3\n"), "line 3 has 3 fields"),
    ("npz without x", lambda t: npz_config(t, y=np.zeros(10, np.int64)), "d.npz"),
    ("npz mismatched lengths", lambda t: npz_config(t, x=np.zeros((10, 3), np.float32), y=np.zeros(8, np.int64)),
     "d.npz"),
    ("npz text features", lambda t: npz_config(t, x=np.array([["a"] * 3] * 10), y=np.zeros(10, np.int64)), "d.npz"),
    ("npz negative class id", lambda t: npz_config(t, x=np.zeros((10, 3), np.float32), y=-np.ones(10, np.int64)),
     "negative class id"),
    ("data path is a directory", lambda t: (t / "dir.csv").mkdir() or
     config(t, 'kind = "csv"\npath = "dir.csv"\ntasks = { y = "classification" }', objective="y.accuracy"),
     "dir.csv"),
    ("idx truncated", _idx_truncated, "img"),
    # ONNX files
    ("onnx truncated", lambda t: onnx_file(t, _good_onnx_bytes(t)[:60]), "m.onnx"),
    ("onnx random bytes", lambda t: onnx_file(t, os.urandom(2000)), "m.onnx"),
    ("onnx empty", lambda t: onnx_file(t, b""), "m.onnx"),
    ("onnx without inputs", _no_inputs_model, "m.onnx"),
    # storages
    ("storage unreachable PostgreSQL", lambda t: [*config(t), "--storage", "postgresql://nobody@127.0.0.1:9/none"],
     "127.0.0.1:9"),
    ("storage unwritable SQLite", lambda t: [*config(t), "--storage", "sqlite:////proc/nasmtl/x.db"], "x.db"),
    ("storage unknown scheme", lambda t: [*config(t), "--storage", "redis://localhost/0"], "redis://"),
    # run names
    ("run name with ..", lambda t: [*config(t), "--name", "../outside"], "--name '../outside'"),
    ("run name with a slash", lambda t: [*config(t), "--name", "a/b"], "--name 'a/b'"),
    ("run name hidden", lambda t: [*config(t), "--name", ".hidden"], "--name '.hidden'"),
]


def _device(t: Path) -> list[str]:
    argv = config(t)
    p = Path(argv[1])
    p.write_text(p.read_text().replace("steps = 2", 'steps = 2\ndevice = "tpu"'))
    return argv


def _missing_grammar(t: Path) -> list[str]:
    argv = config(t)
    p = Path(argv[1])
    p.write_text(p.read_text().replace("grammars/mlp.lark", "grammars/nope.lark"))
    return argv


@pytest.mark.parametrize("make, expected", [(m, e) for _, m, e in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(make: Callable[[Path], list[str]], expected: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    argv = make(work)
    if argv[0] == "search":
        argv += ["--runs", str(tmp_path / "runs")]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expected in lines[0], lines[0]
    assert lines[0].startswith(f"nasmtl {argv[0]}: error: ")
    if argv[0] == "search":
        runs = tmp_path / "runs"
        assert not runs.exists() or not any(runs.iterdir()), sorted(runs.rglob("*"))
        assert not (tmp_path / "outside").exists()


def test_the_table_is_long_enough() -> None:
    assert len(CASES) >= 40
