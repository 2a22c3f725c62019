"""report.html in headless Chromium: every inline image must decode, and the page must render.

Needs the Debian package ``chromium`` (/usr/bin/chromium). Without it the tests
skip, except under CI=true, where a missing browser is a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from demo_cohort import demo_frames

from connector.analysis import analyze_frames
from connector.report import write_report

CHROMIUM = Path(os.environ.get("COHORT_TEST_CHROMIUM", "/usr/bin/chromium"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--hide-scrollbars"]
PROBE = """
<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var out = document.createElement("div");
  out.id = "image-check";
  out.textContent = "images-loaded:" + ok.length + "/" + images.length;
  document.body.appendChild(out);
});
</script>
"""


@pytest.fixture(scope="module")
def chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    message = (f"headless Chromium not found at {CHROMIUM}; install it with "
               "`apt-get install -y chromium` (Debian) to run the report rendering test")
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _run(chromium: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(chromium), *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "HOME": str(profile)})


def _loaded_images(chromium: Path, page: Path, tmp_path: Path) -> tuple[int, int]:
    """(decoded, total) images of ``page`` once loaded, counted by a probe script."""
    html = page.read_text(encoding="utf-8")
    probe = tmp_path / f"probe-{page.stem}.html"
    probe.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    result = _run(chromium, tmp_path / f"profile-{page.stem}", "--dump-dom", probe.as_uri())
    found = re.search(r"images-loaded:(\d+)/(\d+)", result.stdout)
    assert found, f"probe did not run (rc={result.returncode}): {result.stderr[-800:]}"
    return int(found.group(1)), int(found.group(2))


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser_report")
    write_report(analyze_frames(*demo_frames(79, seed=13)), out)
    return out


def test_every_image_in_report_html_loads(chromium, report_dir, tmp_path):
    loaded, total = _loaded_images(chromium, report_dir / "report.html", tmp_path)
    assert total == len(list(report_dir.glob("*.png"))) >= 8
    assert loaded == total


STUDY_SECTIONS = ("Patient flow", "Table 1. Patients at progression after BCMA CAR-T",
                  "More endpoints", "Subgroups", "Multivariable Cox models",
                  "Data completeness")


def test_the_rendered_page_has_the_study_grade_sections(chromium, report_dir, tmp_path):
    result = _run(chromium, tmp_path / "profile-dom", "--dump-dom",
                  (report_dir / "report.html").as_uri())
    headings = re.findall(r"<h2[^>]*>([^<]+)</h2>", result.stdout)
    assert set(STUDY_SECTIONS) <= set(headings), headings
    # each section in the rendered page carries its table or figure, not just a heading
    for name in ("Subgroups", "Multivariable Cox models", "More endpoints",
                 "Data completeness"):
        body = result.stdout.split(f">{name}</h2>", 1)[1].split("<h2", 1)[0]
        assert "<table" in body, name
    subgroups = result.stdout.split(">Subgroups</h2>", 1)[1].split("<h2", 1)[0]
    assert "<img" in subgroups and "hazard ratios" in subgroups


def test_probe_notices_a_broken_image(chromium, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<html><body><img src="data:image/png;base64,AAAA"></body></html>')
    assert _loaded_images(chromium, page, tmp_path) == (0, 1)


def test_report_html_renders_to_a_screenshot(chromium, report_dir, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "report.png"
    result = _run(chromium, tmp_path / "profile-shot", f"--screenshot={shot}",
                  "--window-size=1200,2400", (report_dir / "report.html").as_uri())
    assert shot.exists(), f"no screenshot (rc={result.returncode}): {result.stderr[-800:]}"
    pixels = imread(shot)
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1000
    assert pixels[..., :3].std() > 0.05  # not a blank page
