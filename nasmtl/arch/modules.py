"""Small torch modules for the ops that torch lacks as a module (all batch-first, ONNX-exportable)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def _dim(axis: int) -> int:
    """Map an axis over the non-batch dims to a torch dim of the batched tensor."""
    return axis + 1 if axis >= 0 else axis


class Add(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Multiply(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out


class Concat(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.dim = _dim(axis)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim)


class MatMul(nn.Module):
    """a @ b (or a @ b^T), optionally scaled by 1/sqrt(K): the dot-product merge of attention."""

    def __init__(self, transpose_b: bool, scale: float) -> None:
        super().__init__()
        self.transpose_b = transpose_b
        self.scale = scale

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.transpose_b:
            b = b.transpose(-1, -2)
        out = torch.matmul(a, b)
        return out * self.scale if self.scale != 1.0 else out


class Softmax(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.dim = _dim(axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=self.dim)


class Permute(nn.Module):
    def __init__(self, perm: Sequence[int]) -> None:
        super().__init__()
        self.perm = [0] + [p + 1 for p in perm]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.perm)


class Reshape(nn.Module):
    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


class Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class GlobalPool(nn.Module):
    """Mean or max over all positions: (C,H,W) -> (C,), (N,D) -> (D,)."""

    def __init__(self, mode: str, rank: int) -> None:
        super().__init__()
        self.mode = mode
        self.dims = (2, 3) if rank == 3 else (1,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "max":
            return x.amax(dim=self.dims)
        return x.mean(dim=self.dims)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of an image at every position (as in ConvNeXt)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TokenBatchNorm(nn.Module):
    """BatchNorm over the feature dim of token tensors (B, N, D)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class PositionalEncoding(nn.Module):
    """A learned additive encoding of the input's full (non-batch) shape."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, *shape) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight


class Im2Col(nn.Module):
    """Patch extraction (C,H,W) -> (L, C*k*k) in ``nn.Unfold``'s channel-major order.

    Built from k*k strided slices of the padded image, so the ONNX graph holds only Pad, Slice,
    Concat and Reshape nodes: no weights, no multiply-accumulates, memory linear in the output.
    """

    def __init__(self, channels: int, k: int, stride: int, padding: int) -> None:
        super().__init__()
        self.channels = channels
        self.k = k
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, st, p = self.k, self.stride, self.padding
        if p:
            x = F.pad(x, (p, p, p, p))
        oh = (x.shape[-2] - k) // st + 1
        ow = (x.shape[-1] - k) // st + 1
        if st == k:
            grid = x[:, :, :oh * k, :ow * k].reshape(x.shape[0], self.channels, oh, k, ow, k)
            return grid.permute(0, 2, 4, 1, 3, 5).reshape(x.shape[0], oh * ow, self.channels * k * k)
        taps = [x[:, :, i:i + st * (oh - 1) + 1:st, j:j + st * (ow - 1) + 1:st]
                for i in range(k) for j in range(k)]
        cols = torch.stack(taps, dim=2)
        return cols.flatten(1, 2).flatten(2).transpose(1, 2)


class Zero(nn.Module):
    """Zeros of shape (out, ceil(H/stride), ceil(W/stride)): a cut edge that still exports to ONNX."""

    def __init__(self, out: int, stride: int) -> None:
        super().__init__()
        self.out, self.stride = out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x[:, :1, :: self.stride, :: self.stride] * 0.0
        return y.repeat(1, self.out, 1, 1)


class Col2Im(nn.Module):
    """Tokens back onto an image grid: (h*w, D) -> (D, h, w)."""

    def __init__(self, h: int, w: int) -> None:
        super().__init__()
        self.h, self.w = h, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], self.h, self.w)


class Chunk(nn.Module):
    """Take chunk ``index`` of ``n`` equal chunks along an axis (the grouping split)."""

    def __init__(self, axis: int, n: int, index: int, size: int) -> None:
        super().__init__()
        self.dim = _dim(axis)
        self.start = index * (size // n)
        self.length = size // n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.narrow(self.dim, self.start, self.length)


def inv_sqrt(k: int) -> float:
    """The attention scale 1/sqrt(k)."""
    return 1.0 / math.sqrt(k)
