"""report.html from `python -m dse.report`: self-contained (plotly's JS inlined once, nothing fetched), with every
section; and rendered in a real headless Chromium (Debian's `chromium`): no console errors, every plot drawn,
a screenshot taken. Without chromium the browser test skips, or fails when DSE_REQUIRE_CHROMIUM=1."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from analysis_helpers import make_study


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from dse import report

    run_dir = tmp_path_factory.mktemp("rep") / "study_a"
    make_study(run_dir)
    (run_dir / "table.csv").write_text("row,params,ours_error,paper_error\nWRN-40-1,0.6M,19.71,6.85\n")
    assert report.main([str(run_dir)]) == 0
    return run_dir / "report.html"


def test_report_is_self_contained_with_every_section(report):
    import plotly.offline

    page = report.read_text()
    for title in ("Pareto front", "Error EDF", "Trends", "Parameter importance", "Ablation table (dse.table)",
                  "Learning curves", "Trials (13; click a header to sort)"):
        assert f"<h2>{title}</h2>" in page, title
    assert page.count(plotly.offline.get_plotlyjs()[:500]) == 1  # the JS inlined exactly once
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|<iframe", page)  # nothing loaded from elsewhere
    assert page.count('class="plotly-graph-div') == 5
    assert "WRN-40-1" in page and "over_budget" not in page.split("Trials (13")[0]
    assert "Each point was trained with one seed: no error bars" in page  # issue 21: no bars from one seed


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browse(url: str, *flags: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Headless Chromium on `url` (no network needed), console messages on stderr."""
    sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses to sandbox as root
    cmd = [chromium(), "--headless", "--disable-gpu", *sandbox, "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=15000", "--hide-scrollbars", *flags, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def need_chromium():
    if chromium() is None:
        if os.environ.get("DSE_REQUIRE_CHROMIUM") == "1":
            pytest.fail("DSE_REQUIRE_CHROMIUM=1 but chromium is not installed", pytrace=False)
        pytest.skip("needs Debian's chromium (apt-get install chromium)")


def test_console_errors_are_seen(tmp_path):
    """The check itself: a page with a script error and a console.error is caught."""
    need_chromium()
    bad = tmp_path / "bad.html"
    bad.write_text("<html><head><script>console.error('boom')</script></head>"
                   "<body><script>nope()</script></body></html>")
    proc = browse(bad.as_uri(), "--dump-dom")
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    assert any("boom" in ln for ln in console) and any("Uncaught ReferenceError" in ln for ln in console)


def test_report_renders_in_headless_chromium(report, tmp_path):
    need_chromium()
    proc = browse(report.as_uri(), "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    assert console == [], console
    dom = proc.stdout
    graphs = dom.count('class="plotly-graph-div js-plotly-plot"')  # plotly adds js-plotly-plot once drawn
    assert graphs == 5
    assert dom.count('class="user-select-none svg-container"') == 5 and dom.count('class="main-svg"') >= 5
    assert dom.count("class=\"scatterlayer") >= 4  # traces drawn
    shot = tmp_path / "report.png"
    proc = browse(report.as_uri(), f"--screenshot={shot}", "--window-size=1200,3000")
    assert shot.is_file() and shot.stat().st_size > 20_000, proc.stderr[-2000:]
