"""The built-in ops: one ``register`` call each (shape rule, params, MACs, torch factory).

Shapes exclude the batch dim. Ranks: 3 = image (C, H, W), 2 = tokens (N, D), 1 = vector (D,).
MACs count multiply-accumulates of linear, conv and matmul ops (the usual convention);
norms, activations and pooling count zero.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch.nn as nn

from nasmtl.arch import modules as m
from nasmtl.arch.registry import REQUIRED, OpSpec, Shape, ShapeError, register

Attrs = Mapping[str, Any]


def _prod(xs: Sequence[int]) -> int:
    return int(math.prod(xs))


def _need_rank(shape: Shape, ranks: Sequence[int], what: str) -> None:
    if len(shape) not in ranks:
        kinds = {1: "vector (D,)", 2: "tokens (N, D)", 3: "image (C, H, W)"}
        want = " or ".join(kinds[r] for r in ranks)
        raise ShapeError(f"{what} needs {want} input, got shape {shape}")


def _feature_axis(shape: Shape) -> int:
    """The axis that carries features: channels of an image, the last dim otherwise."""
    return 0 if len(shape) == 3 else len(shape) - 1


def _norm_axis(axis: int | None, shape: Shape) -> int:
    if axis is None:
        return _feature_axis(shape)
    if not -len(shape) <= axis < len(shape):
        raise ShapeError(f"axis {axis} out of range for shape {shape}")
    return axis % len(shape)


def _same(ins: Sequence[Shape], attrs: Attrs) -> Shape:
    return ins[0]


def _pool_out(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


# ---- identity, activations, dropout ---------------------------------------------------------

register(OpSpec("identity", _same, lambda i, o, a: nn.Identity(), doc="skip: output = input"))
register(OpSpec("dropout", _same, lambda i, o, a: nn.Dropout(a["p"]), attrs={"p": 0.1}))
register(OpSpec("relu", _same, lambda i, o, a: nn.ReLU()))
register(OpSpec("gelu", _same, lambda i, o, a: nn.GELU()))
register(OpSpec("sigmoid", _same, lambda i, o, a: nn.Sigmoid()))
register(OpSpec("tanh", _same, lambda i, o, a: nn.Tanh()))


def _softmax_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    _norm_axis(a["axis"], ins[0])
    return ins[0]


register(OpSpec("softmax", _softmax_shape, lambda i, o, a: m.Softmax(a["axis"]), attrs={"axis": -1}))

# ---- linear / conv ---------------------------------------------------------------------------


def _linear_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    s = ins[0]
    if a["out"] < 1:
        raise ShapeError(f"linear out must be >= 1, got {a['out']}")
    if len(s) == 3:
        return (a["out"], s[1], s[2])
    return (*s[:-1], a["out"])


def _linear_params(ins: Sequence[Shape], o: Shape, a: Attrs) -> int:
    d = ins[0][_feature_axis(ins[0])]
    return d * a["out"] + (a["out"] if a["bias"] else 0)


def _linear_macs(ins: Sequence[Shape], o: Shape, a: Attrs) -> int:
    s = ins[0]
    d = s[_feature_axis(s)]
    return d * _prod(o)


def _linear_torch(ins: Sequence[Shape], o: Shape, a: Attrs) -> nn.Module:
    s = ins[0]
    if len(s) == 3:
        return nn.Conv2d(s[0], a["out"], 1, bias=a["bias"])
    return nn.Linear(s[-1], a["out"], bias=a["bias"])


register(OpSpec("linear", _linear_shape, _linear_torch, attrs={"out": REQUIRED, "bias": True},
                params=_linear_params, macs=_linear_macs,
                doc="dense layer over the feature axis (a 1x1 projection on images)"))


def _conv_pad(a: Attrs) -> int:
    return a["k"] // 2 if a.get("padding") is None else a["padding"]


def _conv_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    s = ins[0]
    _need_rank(s, (3,), "conv")
    c, h, w = s
    k, st, g, out = a["k"], a["stride"], a["groups"], a["out"]
    if k < 1 or st < 1 or g < 1 or out < 1:
        raise ShapeError(f"conv needs positive k, stride, groups, out; got {dict(a)}")
    if c % g or out % g:
        raise ShapeError(f"conv groups={g} must divide in channels {c} and out {out}")
    p = _conv_pad(a)
    ho, wo = _pool_out(h, k, st, p), _pool_out(w, k, st, p)
    if ho < 1 or wo < 1:
        raise ShapeError(f"conv k={k} stride={st} does not fit a {h}x{w} image")
    return (out, ho, wo)


def _conv_params(ins: Sequence[Shape], o: Shape, a: Attrs) -> int:
    c = ins[0][0]
    return o[0] * (c // a["groups"]) * a["k"] ** 2 + (o[0] if a["bias"] else 0)


def _conv_macs(ins: Sequence[Shape], o: Shape, a: Attrs) -> int:
    c = ins[0][0]
    return _prod(o) * (c // a["groups"]) * a["k"] ** 2


def _conv_torch(ins: Sequence[Shape], o: Shape, a: Attrs) -> nn.Module:
    return nn.Conv2d(ins[0][0], a["out"], a["k"], stride=a["stride"], padding=_conv_pad(a),
                     groups=a["groups"], bias=a["bias"])


register(OpSpec("conv", _conv_shape, _conv_torch,
                attrs={"out": REQUIRED, "k": 3, "stride": 1, "groups": 1, "bias": True, "padding": None},
                params=_conv_params, macs=_conv_macs,
                doc="2-D convolution, 'same' padding (k//2) unless padding is given"))


def _dw_attrs(ins: Sequence[Shape], a: Attrs) -> dict[str, Any]:
    c = ins[0][0]
    return {"out": c * a["multiplier"], "k": a["k"], "stride": a["stride"], "groups": c,
            "bias": a["bias"], "padding": None}


def _dw_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    _need_rank(ins[0], (3,), "dwconv")
    return _conv_shape(ins, _dw_attrs(ins, a))


register(OpSpec("dwconv", _dw_shape, lambda i, o, a: _conv_torch(i, o, _dw_attrs(i, a)),
                attrs={"k": 3, "stride": 1, "multiplier": 1, "bias": True},
                params=lambda i, o, a: _conv_params(i, o, _dw_attrs(i, a)),
                macs=lambda i, o, a: _conv_macs(i, o, _dw_attrs(i, a)),
                doc="depthwise convolution (groups = channels)"))

# ---- norms ----------------------------------------------------------------------------------


def _norm_params(ins: Sequence[Shape], o: Shape, a: Attrs) -> int:
    return 2 * ins[0][_feature_axis(ins[0])]


def _batchnorm_torch(ins: Sequence[Shape], o: Shape, a: Attrs) -> nn.Module:
    s = ins[0]
    if len(s) == 3:
        return nn.BatchNorm2d(s[0])
    if len(s) == 2:
        return m.TokenBatchNorm(s[1])
    return nn.BatchNorm1d(s[0])


def _layernorm_torch(ins: Sequence[Shape], o: Shape, a: Attrs) -> nn.Module:
    s = ins[0]
    if len(s) == 3:
        return m.ChannelLayerNorm(s[0])
    return nn.LayerNorm(s[-1])


register(OpSpec("batchnorm", _same, _batchnorm_torch, params=_norm_params,
                doc="batch norm over the feature axis"))
register(OpSpec("layernorm", _same, _layernorm_torch, params=_norm_params,
                doc="layer norm over the feature axis (channels of an image, per position)"))

# ---- pooling --------------------------------------------------------------------------------


def _pool_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    s = ins[0]
    _need_rank(s, (3,), "pooling")
    c, h, w = s
    k, st = a["k"], a["stride"]
    p = (k - 1) // 2
    ho, wo = _pool_out(h, k, st, p), _pool_out(w, k, st, p)
    if ho < 1 or wo < 1:
        raise ShapeError(f"pool k={k} stride={st} does not fit a {h}x{w} image")
    return (c, ho, wo)


register(OpSpec("maxpool", _pool_shape,
                lambda i, o, a: nn.MaxPool2d(a["k"], a["stride"], padding=(a["k"] - 1) // 2),
                attrs={"k": 2, "stride": 2}))
register(OpSpec("avgpool", _pool_shape,
                lambda i, o, a: nn.AvgPool2d(a["k"], a["stride"], padding=(a["k"] - 1) // 2,
                                             count_include_pad=False),
                attrs={"k": 2, "stride": 2}))


def _gpool_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    s = ins[0]
    _need_rank(s, (2, 3), "globalpool")
    if a["mode"] not in ("avg", "max"):
        raise ShapeError(f"globalpool mode must be avg or max, got {a['mode']!r}")
    return (s[0],) if len(s) == 3 else (s[1],)


register(OpSpec("globalpool", _gpool_shape, lambda i, o, a: m.GlobalPool(a["mode"], len(i[0])),
                attrs={"mode": "avg"}, doc="mean/max over all positions: image or tokens -> vector"))

# ---- merges ---------------------------------------------------------------------------------


def _all_same(ins: Sequence[Shape], a: Attrs) -> Shape:
    if any(s != ins[0] for s in ins):
        raise ShapeError(f"inputs must have equal shapes, got {list(ins)}")
    return ins[0]


register(OpSpec("add", _all_same, lambda i, o, a: m.Add(), arity=(2, None)))
register(OpSpec("multiply", _all_same, lambda i, o, a: m.Multiply(), arity=(2, None)))


def _concat_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    ranks = {len(s) for s in ins}
    if len(ranks) != 1:
        raise ShapeError(f"concat inputs must have equal rank, got {list(ins)}")
    ax = _norm_axis(a["axis"], ins[0])
    for s in ins:
        if s[:ax] + s[ax + 1:] != ins[0][:ax] + ins[0][ax + 1:]:
            raise ShapeError(f"concat along axis {ax}: other dims differ in {list(ins)}")
    out = list(ins[0])
    out[ax] = sum(s[ax] for s in ins)
    return tuple(out)


register(OpSpec("concat", _concat_shape,
                lambda i, o, a: m.Concat(_norm_axis(a["axis"], i[0])),
                attrs={"axis": None}, arity=(2, None),
                doc="concatenate along an axis (default: the feature axis)"))


def _matmul_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    x, y = ins
    if len(x) < 2 or len(x) != len(y) or x[:-2] != y[:-2]:
        raise ShapeError(f"matmul needs two inputs of equal rank >= 2 with equal leading dims, got {x}, {y}")
    yk, ym = (y[-1], y[-2]) if a["transpose_b"] else (y[-2], y[-1])
    if x[-1] != yk:
        raise ShapeError(f"matmul inner dims differ: {x} x {y} (transpose_b={a['transpose_b']})")
    return (*x[:-1], ym)


def _matmul_macs(ins: Sequence[Shape], o: Shape, a: Attrs) -> int:
    return _prod(o) * ins[0][-1]


register(OpSpec("matmul", _matmul_shape,
                lambda i, o, a: m.MatMul(a["transpose_b"], m.inv_sqrt(i[0][-1]) if a["scale"] else 1.0),
                attrs={"transpose_b": False, "scale": False}, arity=(2, 2), macs=_matmul_macs,
                doc="a @ b (or a @ b^T), scaled by 1/sqrt(K) when scale: the dot-product merge"))

# ---- routing --------------------------------------------------------------------------------


def _reshape_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    shape = tuple(int(v) for v in a["shape"])
    if _prod(shape) != _prod(ins[0]) or any(v < 1 for v in shape):
        raise ShapeError(f"cannot reshape {ins[0]} to {shape}")
    return shape


register(OpSpec("reshape", _reshape_shape, lambda i, o, a: m.Reshape(o), attrs={"shape": REQUIRED}))


def _permute_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    perm = tuple(a["perm"])
    if sorted(perm) != list(range(len(ins[0]))):
        raise ShapeError(f"perm {perm} is not a permutation of the {len(ins[0])} dims of {ins[0]}")
    return tuple(ins[0][p] for p in perm)


register(OpSpec("permute", _permute_shape, lambda i, o, a: m.Permute(a["perm"]),
                attrs={"perm": REQUIRED}, doc="reorder the non-batch dims"))
register(OpSpec("flatten", lambda i, a: (_prod(i[0]),), lambda i, o, a: m.Flatten()))


def _im2col_stride(a: Attrs) -> int:
    return a["k"] if a["stride"] is None else a["stride"]


def _im2col_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    s = ins[0]
    _need_rank(s, (3,), "im2col")
    c, h, w = s
    k, st, p = a["k"], _im2col_stride(a), a["padding"]
    ho, wo = _pool_out(h, k, st, p), _pool_out(w, k, st, p)
    if ho < 1 or wo < 1 or k < 1 or st < 1:
        raise ShapeError(f"im2col k={k} stride={st} does not fit a {h}x{w} image")
    return (ho * wo, c * k * k)


register(OpSpec("im2col", _im2col_shape,
                lambda i, o, a: m.Im2Col(i[0][0], a["k"], _im2col_stride(a), a["padding"]),
                attrs={"k": REQUIRED, "stride": None, "padding": 0},
                doc="patches as tokens: (C,H,W) -> (H'*W', C*k*k); stride defaults to k"))


def _col2im_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    s = ins[0]
    _need_rank(s, (2,), "col2im")
    if s[0] != a["h"] * a["w"]:
        raise ShapeError(f"col2im grid {a['h']}x{a['w']} needs {a['h'] * a['w']} tokens, got {s[0]}")
    return (s[1], a["h"], a["w"])


register(OpSpec("col2im", _col2im_shape, lambda i, o, a: m.Col2Im(a["h"], a["w"]),
                attrs={"h": REQUIRED, "w": REQUIRED},
                doc="tokens back to an image grid: (h*w, D) -> (D, h, w)"))


def _zero_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    s = ins[0]
    _need_rank(s, (3,), "zero")
    st = a["stride"]
    if st < 1:
        raise ShapeError(f"zero needs stride >= 1, got {st}")
    out = s[0] if a["out"] is None else a["out"]
    return (out, (s[1] - 1) // st + 1, (s[2] - 1) // st + 1)


register(OpSpec("zero", _zero_shape, lambda i, o, a: m.Zero(o[0], a["stride"]),
                attrs={"out": None, "stride": 1},
                doc="zeros shaped like a strided image: the 'none' edge of cell spaces"))


def _chunk_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    s = ins[0]
    ax = _norm_axis(a["axis"], s)
    n, idx = a["n"], a["index"]
    if n < 1 or not 0 <= idx < n or s[ax] % n:
        raise ShapeError(f"chunk {idx} of {n} along axis {ax} does not divide size {s[ax]} of {s}")
    out = list(s)
    out[ax] //= n
    return tuple(out)


register(OpSpec("chunk", _chunk_shape,
                lambda i, o, a: m.Chunk(_norm_axis(a["axis"], i[0]), a["n"], a["index"],
                                        i[0][_norm_axis(a["axis"], i[0])]),
                attrs={"n": REQUIRED, "index": REQUIRED, "axis": None},
                doc="chunk `index` of `n` equal parts along an axis (grouping split)"))

register(OpSpec("posenc", _same, lambda i, o, a: m.PositionalEncoding(i[0]),
                params=lambda i, o, a: _prod(i[0]), doc="learned additive positional encoding"))
