"""``report.html`` in a real browser: headless Chromium loads the page and every image in it decodes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from nasmtl.cli import main
from tests.conftest import TINY_RUN

CHECK = """<script>
window.addEventListener('load', () => {
  const found = [...document.images].map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,
                                                width: i.naturalWidth}));
  const out = document.createElement('pre');
  out.id = 'nasmtl-image-check';
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>"""
"""Appended to a copy of the page: the browser itself lists each <img> and whether it decoded."""


def _chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


def test_every_image_of_the_report_loads_in_chromium(root: Path, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_RUN.format(root=root, trials=3) + "\n[final]\nmembers = 1\nsteps = 4\n")
    runs = tmp_path / "runs"
    assert main(["search", str(cfg), "--name", "b", "--runs", str(runs), "--quiet"]) == 0
    assert main(["report", str(runs / "b")]) == 0
    page = (runs / "b" / "report.html").read_text(encoding="utf-8")
    n_img = page.count("<img ")
    assert n_img >= 4                                    # pareto, final models, hypervolume, a network picture
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECK + "</body>") if "</body>" in page else page + CHECK,
                     encoding="utf-8")
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
                           "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="nasmtl-image-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the page did not finish loading in {browser}: {done.stderr[-1500:]}"
    images = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert len(images) == n_img
    assert [i["alt"] for i in images if not i["ok"]] == []
    assert all(i["width"] >= 100 for i in images if not i["alt"].startswith("arch_"))
