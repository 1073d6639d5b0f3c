"""Rewrites that keep a network's function and costs but give ONNX cleaner graphs.

``im2col -> linear -> col2im`` is a convolution: it is rewritten to one ``conv`` node, which
exports as ONNX ``Conv`` (faster in onnxruntime, and what predictors expect to see).
"""

from __future__ import annotations

from nasmtl.arch.ir import Arch, infer_shapes


def _single_consumer(arch: Arch, node: str) -> str | None:
    succ = list(arch.graph.successors(node))
    if len(succ) != 1 or node in arch.outputs.values():
        return None
    return succ[0]


def lower_patch_convs(arch: Arch) -> Arch:
    """A copy of ``arch`` with every im2col-linear-col2im chain replaced by a conv node."""
    out = arch.copy()
    g = out.graph
    for n in list(out.op_nodes()):
        if n not in g or g.nodes[n]["op"] != "im2col":
            continue
        lin = _single_consumer(out, n)
        if lin is None or g.nodes[lin]["op"] != "linear":
            continue
        back = _single_consumer(out, lin)
        if back is None or g.nodes[back]["op"] != "col2im":
            continue
        (src,) = out.inputs_of(n)
        pa, la = g.nodes[n]["attrs"], g.nodes[lin]["attrs"]
        stride = pa["k"] if pa["stride"] is None else pa["stride"]
        attrs = {"out": la["out"], "k": pa["k"], "stride": stride, "groups": 1,
                 "bias": la["bias"], "padding": pa["padding"]}
        g.nodes[back].update(op="conv", attrs=attrs, inputs=[src])
        g.remove_nodes_from([n, lin])
        g.add_edge(src, back)
    infer_shapes(out)
    return out
