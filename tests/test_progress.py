"""Progress display: log lines always, a live status line only on a terminal, nothing with --quiet."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from nasmtl.cli import main
from nasmtl.progress import Progress, duration
from tests.conftest import TINY_RUN


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_line_on_a_terminal_only() -> None:
    tty = _Terminal()
    p = Progress(total=4, stream=tty)
    p.update(1, "left.accuracy 0.5")
    p.say("trial 1 complete")
    p.update(2, "left.accuracy 0.7")
    p.close()
    out = tty.getvalue()
    assert "\r\033[K[1/4 trials]" in out and "best left.accuracy 0.7" in out and "trial 1 complete\n" in out
    assert "about" in out and "left" in out                      # an estimate once a trial was made here
    log = io.StringIO()
    p = Progress(total=4, stream=log)
    p.update(1, "x")
    p.say("trial 1 complete")
    p.close()
    assert log.getvalue() == "trial 1 complete\n"                # a redirected log stays clean
    quiet = _Terminal()
    p = Progress(total=4, stream=quiet, quiet=True)
    p.say("trial 1")
    p.update(1)
    assert quiet.getvalue() == ""


def test_time_left_from_the_pace_so_far(monkeypatch: pytest.MonkeyPatch) -> None:
    import nasmtl.progress as mod

    clock = iter([0.0, 100.0, 200.0])
    monkeypatch.setattr(mod.time, "perf_counter", lambda: next(clock))
    p = Progress(total=10, stream=io.StringIO())
    assert p.status_text(0) == "[0/10 trials] 1m40s elapsed"
    assert p.status_text(2, "acc 0.9") == "[2/10 trials] 3m20s elapsed, about 13m20s left; best acc 0.9"
    assert duration(3725) == "1h02m" and duration(5) == "5s"


def test_search_quiet_prints_no_trial_lines(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_RUN.format(root=root, trials=2))
    assert main(["search", str(cfg), "--name", "q", "--runs", str(tmp_path / "runs"), "--quiet", "--no-final"]) == 0
    err = capsys.readouterr().err
    assert "trial " not in err and "\r" not in err
    assert main(["search", "--name", "q", "--runs", str(tmp_path / "runs"), "--trials", "3", "--no-final"]) == 0
    err = capsys.readouterr().err
    assert "trial    2 complete" in err and "\r" not in err          # not a terminal: plain log lines
