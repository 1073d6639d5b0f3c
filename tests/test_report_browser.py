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


PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9"
         "awAAAABJRU5ErkJggg==")
"""A valid 1x1 PNG: the control page that tells a browser that cannot run here from a page that is broken."""


def _images_in_browser(browser: str, page: str, tmp_path: Path, name: str) -> tuple[list[dict] | None, str]:
    """The browser's own list of the page's images (alt, decoded, width), or None and its stderr."""
    probe = tmp_path / f"{name}.html"
    probe.write_text(page.replace("</body>", CHECK + "</body>") if "</body>" in page else page + CHECK,
                     encoding="utf-8")
    try:
        done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
                               "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None, "the browser did not finish within 120 s"
    found = re.search(r'<pre id="nasmtl-image-check">(.*?)</pre>', done.stdout, re.S)
    if not found:
        return None, done.stderr[-1500:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")), ""


def test_every_image_of_the_report_loads_in_chromium(root: Path, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")
    control, err = _images_in_browser(browser, f'<html><body><img alt="pixel" src="{PIXEL}"></body></html>',
                                      tmp_path, "control")
    if control != [{"alt": "pixel", "ok": True, "width": 1}]:
        pytest.skip(f"{browser} cannot render a page here (control page: {control}; {err[-300:]})")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_RUN.format(root=root, trials=3) + "\n[final]\nmembers = 1\nsteps = 4\n")
    runs = tmp_path / "runs"
    assert main(["search", str(cfg), "--name", "b", "--runs", str(runs), "--quiet"]) == 0
    assert main(["report", str(runs / "b")]) == 0
    page = (runs / "b" / "report.html").read_text(encoding="utf-8")
    n_img = page.count("<img ")
    assert n_img >= 4                                    # pareto, final models, hypervolume, a network picture
    images, err = _images_in_browser(browser, page, tmp_path, "report")
    assert images is not None, f"the report did not finish loading in {browser}: {err}"
    assert len(images) == n_img
    assert [i["alt"] for i in images if not i["ok"]] == []
    assert all(i["width"] >= 100 for i in images if not i["alt"].startswith("arch_"))
