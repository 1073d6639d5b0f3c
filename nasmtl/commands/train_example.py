"""``nasmtl train-example``: the foundation end to end on a hand-written two-branch CNN.

Describe it in the IR, build it in torch, train it on MultiMNIST, export it to ONNX, check
parity on the test split, and measure params, MACs, bytes and latency.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NAME = "train-example"
HELP = "train the example two-branch CNN on MultiMNIST, export and measure it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=float, default=3.0, help="training epochs (default 3)")
    p.add_argument("-o", "--output", type=Path, default=Path("example.onnx"), help="ONNX file to write")
    p.add_argument("--width", type=int, default=32, help="channels of the stem (branches use twice that)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads for the latency measurement")
    p.add_argument("--json", action="store_true", help="print one JSON object of results")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")


def run(args: argparse.Namespace) -> int:
    import torch

    from nasmtl.arch import arch_cost, to_torch
    from nasmtl.data import multimnist
    from nasmtl.examples import two_branch_cnn
    from nasmtl.onnx import check_parity, export_onnx, graph_stats, measure_latency, model_metadata
    from nasmtl.train import Budget, TrainConfig, evaluate, resolve_device, train

    def say(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    data = multimnist(seed=args.seed)
    heads = {t.name: t.n_outputs for t in data.tasks}
    arch = two_branch_cnn(data.input_shape, heads, width=args.width)
    cost = arch_cost(arch)
    say(f"model: two-branch CNN, {cost.params:,} params, {cost.macs:,} MACs; "
        f"data: {data.name}, {len(data.train)} train / {len(data.val)} val / {len(data.test)} test")
    device = resolve_device(args.device)
    model = to_torch(arch, seed=args.seed).to(device)
    result = train(model, data, TrainConfig(budget=Budget(epochs=args.epochs), seed=args.seed), progress=True)
    model = model.cpu()
    primary = {t.name: result.metrics[t.name][t.primary_metric] for t in data.tasks}
    say("validation " + ", ".join(f"{k} {v:.4f}" for k, v in primary.items())
        + f" after {result.epochs:g} epochs in {result.seconds:.1f} s")
    model.eval()
    test_torch = evaluate(model, data.test, data.tasks)
    test_values = {f"{t}.{k}": v for t, ms in test_torch.items() for k, v in ms.items()}
    meta = model_metadata(data, "two-branch-cnn (nasmtl.examples)", None,
                          {"split": "test", "budget": f"{args.epochs:g} epochs", "values": test_values})
    exp = export_onnx(model, data.input_shape, args.output, list(heads), metadata=meta)
    parity = check_parity(model, args.output, data.test.x, atol=1e-4)
    stats = graph_stats(args.output)
    lat = measure_latency(args.output, threads=args.threads)
    say(f"exported {args.output} in {exp.seconds:.2f} s; parity on {parity.n} test examples: "
        f"max |onnx - torch| = {parity.worst:.2e} (tolerance 1e-4)")
    say(f"ONNX: {stats.params:,} params, {stats.macs:,} MACs, {stats.bytes:,} bytes, "
        f"latency {lat.median_ms:.3f} ms (batch 1, median of {lat.runs}, {lat.threads} thread(s))")
    if args.json:
        print(json.dumps({
            "val": primary,
            "test": {t.name: test_torch[t.name][t.primary_metric] for t in data.tasks},
            "epochs": result.epochs, "train_seconds": result.seconds,
            "parity_max_abs_diff": parity.worst, "params": stats.params, "macs": stats.macs,
            "bytes": stats.bytes, "latency_ms": lat.median_ms, "onnx": str(args.output),
        }))
    return 0
