"""What the reader reads: clinical words, not codes; no "0 patients had ..." sentences; no
table printed twice. results.json keeps its codes (checked here too)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pandas as pd
import pytest
from demo_cohort import demo_frames

from connector.analysis import analyze_frames
from connector.report import write_report
from connector.report.labels import SNAKE, plural, prose, site_name

FILE_SUFFIX = re.compile(r"\.(png|svg|csv|json|md|html)\b")
ZERO_FILLER = re.compile(r"(?<![\d.])0 (further )?(patient|line|first line|VGPR line|death|site)s?"
                         r"\b")


def _snake_tokens(text: str) -> list[str]:
    """snake_case words in ``text``, except file names (km_os.png is a file, not prose)."""
    return [m.group(0) for m in SNAKE.finditer(text)
            if not FILE_SUFFIX.match(text, m.end())]


class _Visible(HTMLParser):
    """The text a browser shows: no tags, no attributes (so no inline image data)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        self._skip += tag in ("style", "script")

    def handle_endtag(self, tag):  # noqa: ANN001
        self._skip -= tag in ("style", "script")

    def handle_data(self, data):  # noqa: ANN001
        if not self._skip:
            self.parts.append(data)


def _visible_text(html: str) -> str:
    parser = _Visible()
    parser.feed(html)
    return " ".join(parser.parts)


def _prose_paragraphs(md: str) -> list[str]:
    """report.md's paragraphs and list items, without tables, image links or headings."""
    return [block for block in md.split("\n\n")
            if block and not block.startswith(("|", "#", "!["))]


@pytest.fixture(scope="module", params=[(79, 2, 13), (25, 1, 3)], ids=["two_sites", "one_site"])
def report(request, tmp_path_factory):
    n, sites, seed = request.param
    out = tmp_path_factory.mktemp("wording")
    analysis = analyze_frames(*demo_frames(n, n_sites=sites, seed=seed))
    write_report(analysis, out)
    return analysis, out


def test_snake_case_check_would_catch_a_code():
    assert _snake_tokens("Lines of anti_cd38 and imid_pi; see km_os.png") == ["anti_cd38",
                                                                             "imid_pi"]
    assert ZERO_FILLER.search("0 patients lacked a date") and ZERO_FILLER.search(
        "site A: 0 deaths")
    assert not ZERO_FILLER.search("10 patients, 2.0 lines")


def test_no_code_labels_in_markdown_or_html(report):
    analysis, out = report
    md = (out / "report.md").read_text()
    reader_text = md.split("## Files")[0]  # the file list names files, which are codes
    assert _snake_tokens(reader_text) == []
    assert _snake_tokens(_visible_text((out / "report.html").read_text())) == []
    assert "(s)" not in md
    assert "contract keys" not in md and "results.json's" not in md
    # the codes are still what results.json says
    data = json.loads((out / "results.json").read_text())
    assert set(data["first_line"]["orr"]) == {"overall", "tce", "non_tce"}
    assert "no_car_t" in data["excluded"]
    assert analysis.results["n_sites"] == data["n_sites"]


def test_no_zero_count_filler_sentences(report):
    analysis, out = report
    md = (out / "report.md").read_text()
    hits = [p for p in _prose_paragraphs(md) if ZERO_FILLER.search(p)]
    assert hits == []
    assert analysis.results["first_line_detail"]["n_cr_not_determinable"] == 0
    assert "could not be determined" not in md


def test_nonzero_counts_are_said(tmp_path):
    patients, lines = demo_frames(30, seed=5)
    first = lines.sort_values("line").groupby(["site", "source_id"]).head(1).index[:2]
    lines.loc[first, ["pfs_event_date", "pfs_censor_date"]] = pd.NaT
    analysis = analyze_frames(patients, lines)
    missing = analysis.results["first_line_detail"]["n_pfs_not_usable"]
    assert missing == 2
    write_report(analysis, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "2 first lines had no PFS event or censoring date" in md


def test_no_table_printed_twice(report):
    _, out = report
    md = (out / "report.md").read_text()
    tables = [block for block in md.split("\n\n") if block.startswith("|")]
    assert len(tables) == len(set(tables))
    rows = [line for t in tables for line in t.splitlines()[2:]]
    assert len(rows) == len(set(rows)), [r for r in rows if rows.count(r) > 1]
    # nor the same figures under another label (e.g. a CAR-T row in two tables)
    values = [tuple(cell.strip() for cell in row.split("|")[2:-1]) for row in rows]
    values = [v for v in values if len(v) >= 2 and any("CI" in cell for cell in v)]
    assert len(values) == len(set(values)), [v for v in values if values.count(v) > 1]


def test_helpers():
    assert plural(1, "site") == "1 site" and plural(2, "site") == "2 sites"
    assert site_name("site_a") == "Site A"
    assert prose("see os.landmark; best response >= PR") == "see the landmark analysis; best " \
                                                           "response ≥ PR"
    assert prose("a new_code here") == "a new code here"
