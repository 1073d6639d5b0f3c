"""Pictures and text trees of architectures (nasmtl.arch.draw) and the ``nasmtl show`` command."""

from __future__ import annotations

import json
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from nasmtl.arch import ArchBuilder, add_head, draw_arch, text_tree
from nasmtl.arch.draw import node_label, place, sections
from nasmtl.arch.lower import lower_patch_convs
from nasmtl.cli import main
from nasmtl.examples import two_branch_cnn
from nasmtl.spaces.grammar import GrammarSpace
from nasmtl.spaces.joint import JointSpace
from nasmtl.spaces.layout import LayoutSpace
from nasmtl.spaces.quant import PRECISIONS, QuantSpace

ROOT = Path(__file__).resolve().parents[2]
CNN_GRAMMAR = ROOT / "grammars" / "cnn.lark"
HEADS = {"left": 10, "right": 10}
# A design of grammars/cnn.lark: a stem, a residual block and a plain block (three top-level stages).
RESIDUAL = ("seq(seq(conv(out=8,k=3),batchnorm,relu),seq(branch(clone,seq(conv(out=8,k=1),batchnorm,relu),"
            "identity,add),avgpool(k=2,stride=2)),seq(seq(conv(out=16,k=3),batchnorm,relu),avgpool(k=2,stride=2)))")
JOINT = f"arch={RESIDUAL};layout=left+right/left|right/left|right;quant=fp32,int8_static,int4_int8"


@pytest.fixture(scope="module")
def cnn():
    """The example two-branch CNN: a shared stem, one conv branch per task."""
    return two_branch_cnn((1, 36, 36), HEADS)


@pytest.fixture(scope="module")
def joint():
    """A joint design of the CNN grammar (shared stem, branches from stage 1, a policy per stage) and its network."""
    space = JointSpace(GrammarSpace.from_file(CNN_GRAMMAR), LayoutSpace(list(HEADS), 3), QuantSpace(3, PRECISIONS))
    design = space.decode(JOINT)
    return design, lower_patch_convs(space.build(design, (1, 36, 36), HEADS, "grid"))


def _svg_text(path: Path) -> str:
    """All text of an SVG file, after checking it parses as one."""
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    return " ".join(t for el in root.iter() for t in (el.text or "",) if t.strip())


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header, after checking its signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# ---- text trees ----------------------------------------------------------------------------------


def test_text_tree_lists_the_trunk_before_the_branches_and_both_heads(cnn):
    lines = text_tree(cnn).splitlines()
    assert lines[0] == "input (1, 36, 36)"
    assert lines[1] == "shared [left+right] stage 0"
    assert lines[2] == "  conv out=32 k=3 -> (32, 36, 36)"
    left, right = lines.index("branch [left] stage 1"), lines.index("branch [right] stage 1")
    assert 1 < left < right
    assert lines[-2:] == ["head left: linear out=10 -> (10,)", "head right: linear out=10 -> (10,)"]
    assert "  linear out=128 -> (128,)" in lines[left:right]
    assert sum(line.startswith("  ") for line in lines) == len(cnn.op_nodes()) - 2


def test_text_tree_names_the_inputs_of_a_residual_add_and_the_precisions(joint):
    design, arch = joint
    text = text_tree(arch, precisions=design.quant)
    assert "shared [left+right] stage 0 (fp32)" in text
    assert "branch [left] stage 1 (int8_static)" in text and "branch [right] stage 2 (int4_int8)" in text
    assert "  identity_4: identity <- relu_3 (s0) -> (8, 36, 36)" in text
    assert "  add <- relu_3, identity_4 -> (8, 36, 36)" in text
    assert "head left (int4_int8): avgpool k=4 s=4 -> (16, 2, 2), flatten -> (64,), linear out=10 -> (10,)" in text


def test_sections_of_a_network_without_stage_names():
    b = ArchBuilder((1, 8, 8))
    x = b.add("relu", b.add("conv", b.input, out=4, k=3, stride=2))
    add_head(b, x, "left", 3)
    add_head(b, b.add("conv", x, out=4, k=1), "right", 2)
    arch = b.build()
    secs = sections(arch)
    assert secs["conv_1"].title == "shared [left+right]"
    assert secs["conv_3"].title == "branch [right]" and secs["right_head"].title == "head right"
    assert node_label(arch, "conv_1") == "conv out=4 k=3 s=2"
    text = text_tree(arch, precisions={0: "int8_static", 1: "fp32"})
    assert "shared [left+right] (int8_static)" in text and "head right (int8_static)" in text


# ---- pictures ------------------------------------------------------------------------------------


def test_draw_two_branch_cnn_to_svg_and_png(cnn, tmp_path):
    svg = draw_arch(cnn, tmp_path / "cnn.svg", title="two-branch CNN")
    text = _svg_text(svg)
    for want in ("two-branch CNN", "output: left", "output: right", "conv out=32 k=3", "linear out=128",
                 "linear out=10", "(32, 36, 36)", "shared left+right stage 0", "branch left stage 1",
                 "branch right stage 1", "head left"):
        assert want in text, want
    w, h = _png_size(draw_arch(cnn, tmp_path / "cnn.png"))
    assert h > w > 300


def test_draw_joint_design_with_its_policy(joint, tmp_path):
    design, arch = joint
    text = _svg_text(draw_arch(arch, tmp_path / "joint.svg", precisions=design.quant))
    for want in ("precision", "fp32", "int8_static", "int4_int8", "task group", "shared left+right",
                 "branch left stage 1 · int8_static", "head right · int4_int8", "output: right", "identity"):
        assert want in text, want
    assert "int8_dynamic" not in text
    w, h = _png_size(draw_arch(arch, tmp_path / "joint.png", precisions=dict(enumerate(design.quant.precisions))))
    assert w > 300 and h > 300


def test_placement_separates_branches_and_routes_long_edges(joint):
    _, arch = joint
    placed = place(arch)
    by_layer: dict[int, list[float]] = {}
    for x, k in placed.nodes.values():
        by_layer.setdefault(k, []).append(x)
    assert all(b - a >= 1 - 1e-9 for xs in by_layer.values() for a, b in zip(sorted(xs), sorted(xs)[1:]))
    left = [placed.nodes[n][0] for n in arch.op_nodes() if n.startswith(("s1.left.", "s2.left.", "left_"))]
    right = [placed.nodes[n][0] for n in arch.op_nodes() if n.startswith(("s1.right.", "s2.right.", "right_"))]
    assert max(left) < min(right)
    skips = [e for e in placed.routes if arch.graph.nodes[e[1]]["op"] == "add"]
    assert len(skips) == 2 and all(len(placed.routes[e]) == 2 for e in skips)


def test_a_long_chain_keeps_its_box_size(tmp_path):
    b = ArchBuilder((16,))
    x = b.input
    for _ in range(60):
        x = b.add("relu", b.add("linear", x, out=16))
    add_head(b, x, "y", 2)
    w, h = _png_size(draw_arch(b.build(), tmp_path / "chain.png"))
    assert h > 60 * 2 * 0.9 * 150 and w < h / 20


def test_draw_rejects_an_unknown_suffix(cnn, tmp_path):
    with pytest.raises(ValueError, match=r"cnn\.jpg: cannot draw to a \.jpg file"):
        draw_arch(cnn, tmp_path / "cnn.jpg")


# ---- nasmtl show ---------------------------------------------------------------------------------


def test_show_a_design_string(tmp_path, capsys):
    out = tmp_path / "fig.svg"
    assert main(["show", RESIDUAL, "--grammar", str(CNN_GRAMMAR), "-o", str(out)]) == 0
    got = capsys.readouterr()
    assert "shared [left+right] stage 2" in got.out and "head right: globalpool -> (16,)" in got.out
    assert f"wrote {out}" in got.err
    assert "output: left" in _svg_text(out)


def test_show_a_joint_design_with_a_policy(tmp_path, capsys):
    out = tmp_path / "fig.png"
    assert main(["show", JOINT, "--grammar", str(CNN_GRAMMAR), "--head-pool", "grid", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "branch [right] stage 1 (int8_static)" in text and "head left (int4_int8)" in text
    _png_size(out)


def test_show_a_design_file_names_its_grammar(tmp_path, capsys):
    (tmp_path / "g.lark").write_text(CNN_GRAMMAR.read_text())
    (tmp_path / "d").mkdir()
    design = tmp_path / "d" / "mine.txt"
    design.write_text(f"# a design\n# grammar: ../g.lark\n{RESIDUAL[:40]}\n{RESIDUAL[40:]}\n")
    assert main(["show", str(design)]) == 0
    assert "mine.txt of g.lark" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["show", "seq(conv(out=8,k=3),bogus)", "--grammar", str(CNN_GRAMMAR)],
     r"design 'seq\(conv\(out=8,k=3\),bogus\)': not a design of .*cnn\.lark"),
    (["show", RESIDUAL], r"a design string needs --grammar FILE"),
    (["show", "runs/no-such-run", "--trial", "1"], r"runs/no-such-run: no such run directory"),
    (["show", RESIDUAL, "--grammar", str(CNN_GRAMMAR), "-o", "x.jpg"], r"x\.jpg: cannot draw"),
])
def test_show_bad_input_is_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("nasmtl show: error: ")
    assert re.search(message, err), err


@pytest.fixture
def fake_run(tmp_path):
    """A run directory as ``nasmtl search`` leaves it: config.json, run.json and two trial records."""
    from nasmtl.config import default_config
    from nasmtl.search.evaluate import load_space

    cfg = default_config()
    d = cfg.to_dict()
    d["data"].update(n_train=60, n_val=20, n_test=20)
    run = tmp_path / "runs" / "fake"
    (run / "trials").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(d))
    (run / "run.json").write_text(json.dumps({"name": "fake", "storage": None}))
    from nasmtl.config import RunConfig

    space = load_space(RunConfig.from_dict(d))
    design = space.encode(space.sample(np.random.default_rng(0)))
    for k in (0, 2):
        (run / "trials" / f"{k:05d}.json").write_text(json.dumps(
            {"trial": k, "state": "complete", "design": design, "objectives": {"left.accuracy": 0.5, "bytes": 9e3}}))
    return run, design


def test_show_a_trial_of_a_run(fake_run, tmp_path, capsys):
    run, design = fake_run
    out = tmp_path / "trial.svg"
    assert main(["show", str(run), "--trial", "2", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "# fake trial 2 (complete: left.accuracy 0.5, bytes 9000)" in text
    assert f"# design: {design}" in text
    policy = design.rsplit(";quant=", 1)[1].split(",")
    assert f"stage 0 ({policy[0]})" in text
    assert "head left" in text and "head right" in text
    assert policy[-1] in _svg_text(out)


def test_show_a_missing_trial_lists_the_trials(fake_run, capsys):
    run, _ = fake_run
    assert main(["show", str(run), "--trial", "7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"nasmtl show: error: {run}: no trial 7 (trials: 0, 2)"
    assert main(["show", str(run)]) == 2
    assert "give --trial K (trials: 0, 2)" in capsys.readouterr().err
