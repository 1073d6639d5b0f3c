"""``run_worker``: join a running study from another process or machine and run trials until its budget."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from nasmtl.run.build import run_engine, stderr_line
from nasmtl.run.lifecycle import join_run
from nasmtl.search.engine import Summary


def run_worker(name: str, storage_url: str, runs_root: Path = Path("runs"), trials: int | None = None,
               progress: Callable[[str], None] | None = stderr_line) -> Summary:
    """Run trials of study ``name`` in ``storage_url`` (config read from the study) until the shared budget."""
    run = join_run(name, storage_url, runs_root)
    if progress is not None:
        progress(f"worker joined study {name!r}: {run.config.search.sampler} sampler, "
                 f"objectives {', '.join(run.config.objective_names)}")
    return run_engine(run, trials=trials, progress=progress)
