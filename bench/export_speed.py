"""Export speed of the TorchScript-based vs the dynamo ONNX exporter on small models, with parity of each.

Run: ``python bench/export_speed.py [--repeats N]``. Prints seconds per model for each exporter (median of
N exports after one untimed warm-up export per exporter), the ratio dynamo / torchscript, and the largest
torch-vs-onnxruntime difference of each exported file.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nasmtl.onnx import check_parity, export_onnx  # noqa: E402


class TwoHeadCNN(nn.Module):
    """Small CNN with a classification and a regression head."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.cls = nn.Linear(32, 10)
        self.reg = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {"cls": self.cls(h), "reg": self.reg(h)}


class MLP(nn.Module):
    """Three-layer MLP with two task heads."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 128), nn.GELU())
        self.a = nn.Linear(128, 5)
        self.b = nn.Linear(128, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {"a": self.a(h), "b": self.b(h)}


class AttentionBlock(nn.Module):
    """Pre-norm single-head self-attention and MLP over 16 tokens of width 32, mean-pooled into one head."""

    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.head = nn.Linear(d, 4)
        self.scale = d**-0.5

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        att = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        x = x + self.proj(att @ v)
        x = x + self.mlp(self.norm2(x))
        return {"y": self.head(x.mean(dim=1))}


MODELS: list[tuple[str, Callable[[], nn.Module], tuple[int, ...]]] = [
    ("cnn_two_heads", TwoHeadCNN, (3, 32, 32)),
    ("mlp", MLP, (64,)),
    ("attention_block", AttentionBlock, (16, 32)),
]


def _time_exports(model: nn.Module, shape: tuple[int, ...], path: Path, exporter: str, repeats: int) -> float:
    """Median seconds of ``repeats`` exports."""
    times = [export_onnx(model, shape, path, exporter=exporter).seconds for _ in range(repeats)]  # type: ignore[arg-type]
    return statistics.median(times)


def main() -> None:
    """Export each model with both exporters and print the timing table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed exports per model and exporter")
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        warm = MLP()
        for exporter in ("torchscript", "dynamo"):
            export_onnx(warm, (64,), tmpdir / f"warmup_{exporter}.onnx", exporter=exporter)  # type: ignore[arg-type]
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats} exports")
        header = (
            f"{'model':<16} {'torchscript s':>13} {'dynamo s':>9} {'ratio':>7} {'parity ts':>10} {'parity dyn':>10}"
        )
        print(header)
        print("-" * len(header))
        ratios = []
        for name, make, shape in MODELS:
            model = make().eval()
            x = rng.standard_normal((8, *shape)).astype(np.float32)
            row = {}
            for exporter in ("torchscript", "dynamo"):
                path = tmpdir / f"{name}_{exporter}.onnx"
                secs = _time_exports(model, shape, path, exporter, args.repeats)
                parity = check_parity(model, path, x, raise_on_fail=False)
                row[exporter] = (secs, parity)
            (ts, p_ts), (dy, p_dy) = row["torchscript"], row["dynamo"]
            ratios.append(dy / ts)
            print(
                f"{name:<16} {ts:>13.3f} {dy:>9.3f} {dy / ts:>6.1f}x "
                f"{p_ts.worst:>10.1e} {p_dy.worst:>10.1e}" + ("" if p_ts.ok and p_dy.ok else "  PARITY FAIL")
            )
        print(f"geometric-mean ratio dynamo/torchscript: {float(np.exp(np.mean(np.log(ratios)))):.1f}x")


if __name__ == "__main__":
    main()
