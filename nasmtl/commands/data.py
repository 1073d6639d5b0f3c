"""``nasmtl data show NAME``: what a data set holds (tasks, kinds, shapes, split sizes)."""

from __future__ import annotations

import argparse
import json

NAME = "data"
HELP = "inspect multi-task data sets (nasmtl data show multimnist)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="tasks, kinds, shapes and split sizes of a data set")
    show.add_argument("dataset", help="a built-in name (multimnist) or a .npz file")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    sub.add_parser("list", help="the built-in data sets")


def run(args: argparse.Namespace) -> int:
    from nasmtl.data import available_datasets, load_dataset

    if args.action == "list":
        for name in available_datasets():
            print(name)
        return 0
    spec = {"kind": "npz", "path": args.dataset} if args.dataset.endswith(".npz") else {"name": args.dataset}
    info = load_dataset(spec).describe()
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"data set: {info.get('name', args.dataset)}")
    for key, value in info.items():
        if key in ("name", "tasks"):
            continue
        print(f"  {key}: {value}")
    print("  tasks:")
    for task in info.get("tasks", []):
        if isinstance(task, dict):
            print("    " + ", ".join(f"{k}={v}" for k, v in task.items()))
        else:
            print(f"    {task}")
    return 0
