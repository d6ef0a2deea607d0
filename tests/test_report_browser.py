"""The report of a typed table, rendered in headless Chromium: it loads, every figure decodes, no console error.

Chromium is Debian's ``chromium`` (``.ci/run`` installs it); a clone without it skips this file.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from tests.test_real_tables import typed_table

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")

# Injected into a copy of the page: counts decoded images and every error (script, resource, console.error)
PROBE = """<script>
const errors = [];
window.addEventListener('error', e => errors.push(e.message || ('failed to load ' + (e.target.src || e.target.href))), true);
const original = console.error; console.error = (...a) => { errors.push(a.join(' ')); original(...a); };
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0).length;
  document.title = 'PROBE decoded ' + ok + '/' + imgs.length + ' errors ' + errors.length + ' ' + errors.join(' | ');
});
</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                           "--enable-logging=stderr", "--v=0", *args], capture_output=True, text=True, timeout=120)


def test_typed_report_renders_in_chromium(tmp_path):
    from augment.evaluate import EvalConfig, run_evaluation, write_report

    # Setup: a typed table (dates, timestamps, decimals, identifiers, rare values), its report
    real = typed_table(600, seed=0)
    idx = np.random.default_rng(0).permutation(real.num_rows)
    train, test = real.take(np.sort(idx[:450])), real.take(np.sort(idx[450:]))
    synthetic = typed_table(450, seed=1)
    ev = run_evaluation(train, test, synthetic, "label", config=EvalConfig(sweep_sizes=(), per_class=False))
    page = write_report(ev, tmp_path / "report")
    html = page.read_text()
    assert "calendar.png" in html and "Identifiers" in html and "Rare values" in html
    probe = page.with_name("probe.html")
    probe.write_text(html.replace("<head>", "<head>" + PROBE, 1))
    # Run
    dom = _chromium("--dump-dom", probe.as_uri())
    shot = _chromium("--window-size=1280,6000", f"--screenshot={tmp_path / 'report.png'}", page.as_uri())
    # Assert
    assert dom.returncode == 0, dom.stderr[-2000:]
    title = re.search(r"<title>(PROBE[^<]*)</title>", dom.stdout)
    assert title, dom.stdout[:500]
    decoded, total, errors = re.match(r"PROBE decoded (\d+)/(\d+) errors (\d+)", title.group(1)).groups()
    figures = len(ev.figures)
    assert int(total) == figures >= 5 and int(decoded) == figures and errors == "0", title.group(1)
    assert not [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "error" in line.lower()]
    assert shot.returncode == 0 and (tmp_path / "report.png").stat().st_size > 50_000
    shutil.copy(tmp_path / "report.png", tmp_path.parent / "report-screenshot.png")  # for a person to look at
