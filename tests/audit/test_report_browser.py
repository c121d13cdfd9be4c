"""Reports in a real headless browser: they load without script errors, every image renders, and nothing is wider
than the page at 1280 px (audit, embeddings audit, study and sweep reports)."""
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from spurlab.cli import app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const width = document.documentElement.scrollWidth;
  document.body.setAttribute('data-probe', imgs.length + ':' + ok + ':' + window.__errors.length + ':' + width);
});
</script>"""


@pytest.fixture(scope="module")
def chromium():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required in CI (.ci/run installs Debian's chromium package)")
        pytest.skip("Chromium is not installed (apt-get install chromium); CI installs it")
    return CHROMIUM


PAGE_WIDTH = 1280


def render(chromium: str, page, tmp_path) -> tuple[int, int, int, int]:
    """(images, images rendered, script errors, page scroll width) of a report in a 1280 px wide window."""
    probed = tmp_path / f"probed-{page.parent.name}.html"
    probed.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--window-size={PAGE_WIDTH},900", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    match = re.search(r'data-probe="(\d+):(\d+):(\d+):(\d+)"', dom)
    assert match, f"{page} did not finish loading in Chromium"
    return tuple(map(int, match.groups()))


def check_page(chromium: str, page, tmp_path, min_images: int) -> None:
    total, rendered, errors, width = render(chromium, page, tmp_path)
    assert total == page.read_text().count("<img ") and total >= min_images
    assert rendered == total, f"only {rendered} of {total} images rendered in {page}"
    assert errors == 0
    assert width <= PAGE_WIDTH, f"{page} is {width} px wide: something is wider than the page at {PAGE_WIDTH} px"


def test_audit_report_renders_and_fits_the_page(chromium, tmp_path):
    out = tmp_path / "audit"
    result = CliRunner().invoke(app, ["audit", "--quick", "--out", str(out), "--methods", "erm,dfr",
                                      "--seeds", "1", "--epochs", "10", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    check_page(chromium, out / "report.html", tmp_path, min_images=4)  # groups, histogram, top examples, units


def test_embeddings_audit_report_fits_the_page(chromium, tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 2, n)
    minority = rng.random(n) < 0.2
    emb = rng.normal(size=(n, 16)) + np.where(minority, 3.0, 0.0)[:, None] * np.eye(16)[0]
    pred = np.where(minority, 1 - y, y)
    path = tmp_path / "emb.npz"
    np.savez(path, embeddings=emb, labels=y, predictions=pred, spurious=np.where(minority, 1 - y, y),
             split=np.array(["train", "val", "test"])[np.arange(n) % 3])
    out = tmp_path / "emb-audit"
    result = CliRunner().invoke(app, ["audit", "--embeddings", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    check_page(chromium, out / "report.html", tmp_path, min_images=2)


def test_study_report_fits_the_page(chromium, tmp_path):
    from spurlab.studies.study_base import run_study

    overrides = {"experiments": ["synthetic"], "d": 30, "N": [5, 10], "rf_k": 100, "ntk_k": 5, "n_test": 30}
    _, out = run_study("spurious-memorization", out_dir=tmp_path / "study", quick=True, device="cpu",
                       overrides=overrides)
    check_page(chromium, out / "report.html", tmp_path, min_images=1)


def test_sweep_report_fits_the_page(chromium, tmp_path):
    from spurlab.sweep import collect, run_sweep

    config = {"name": "quad", "target": "python:tests.sweep.sweep_helpers:noisy_quadratic", "seeds": 2,
              "fixed": {"scale": 0.1}, "grid": {"x": [0.0, 1.0, 2.0]}}
    run_sweep(config, tmp_path / "sweep", executor="local", workers=1)
    outcome = collect(tmp_path / "sweep", dest=tmp_path / "collect")
    page = outcome.report_path.read_text()
    assert page.index("<figure") < page.index("<table")  # the summary and the figures come first
    check_page(chromium, outcome.report_path, tmp_path, min_images=2)
