"""The report's figures, read back: the SVG's text and groups, the PNG's dpi, and the
layout measured with matplotlib's renderer (no overlap of the at-risk table and the axis)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from demo_cohort import demo_frames
from PIL import Image as PILImage

from connector.analysis import analyze_frames
from connector.report import write_report
from connector.report.figure import PNG_DPI
from connector.report.km import AT_RISK_TITLE, Curve, at_risk, km_figure, stop_time
from connector.report.plots import response_figure
from connector.report.settings import ReportRulesError, report_rules
from connector.report.swimmer import swimmer_figure

SVG = "{http://www.w3.org/2000/svg}"
KM_FILES = ("km_first_line_pfs", "km_os", "km_os_by_ever_tce", "km_os_landmark")
TWO_GROUPS = ("km_first_line_pfs", "km_os_by_ever_tce", "km_os_landmark")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    analysis = analyze_frames(*demo_frames(79, seed=13))
    write_report(analysis, out)
    return analysis, out


def _svg(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


def _group(root: ET.Element, gid: str) -> ET.Element | None:
    return next((g for g in root.iter(f"{SVG}g") if g.get("id") == gid), None)


def _texts(element: ET.Element) -> list[str]:
    return ["".join(t.itertext()).strip() for t in element.iter(f"{SVG}text")]


def _tick_texts(axes: ET.Element, axis: str) -> list[str]:
    return [text for g in axes.iter(f"{SVG}g") if (g.get("id") or "").startswith(f"{axis}tick_")
            for text in _texts(g) if text]


def _renderer(fig):  # noqa: ANN001, ANN202
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def test_every_figure_is_an_svg_and_a_300_dpi_png(built):
    _, out = built
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 8  # six outcome figures, the patient flow and the forest plot
    for png in pngs:
        assert png.with_suffix(".svg").exists(), png.name
        with PILImage.open(png) as image:
            assert image.info["dpi"] == pytest.approx((PNG_DPI, PNG_DPI), abs=0.01)
            assert image.size[0] >= 7 * PNG_DPI  # 7 inches or wider at 300 dpi


@pytest.mark.parametrize("name", KM_FILES)
def test_km_svg_percent_axis_median_marker_and_no_title(built, name):
    analysis, out = built
    root = _svg(out / f"{name}.svg")
    axes = _group(root, "km-axes")
    assert axes is not None
    y_labels = _tick_texts(axes, "y")
    assert len(y_labels) >= 4 and all(label.endswith("%") for label in y_labels), y_labels
    assert "50%" in y_labels and "100%" in y_labels
    assert _group(root, "median-0-to-x") is not None and _group(root, "median-0-to-y") is not None
    value = "".join(_texts(_group(root, "median-0-value")))
    assert re_float(value)
    # the figure's title is metadata only: it is nowhere in the drawn text
    title = root.find(f"{SVG}title").text
    assert title and title not in " ".join(_texts(root))


def re_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_median_value_is_the_analysis_median(built):
    analysis, out = built
    root = _svg(out / "km_os.svg")
    shown = float("".join(_texts(_group(root, "median-0-value"))))
    assert shown == pytest.approx(analysis.results["os"]["median_months"]["estimate"], abs=0.05)


@pytest.mark.parametrize("name", TWO_GROUPS)
def test_two_group_figures_print_hr_and_log_rank_p(built, name):
    _, out = built
    legend = " ".join(_texts(_group(_svg(out / f"{name}.svg"), "km-legend")))
    assert "HR (" in legend and "log-rank p" in legend


def test_hr_on_the_figure_is_the_results_hr(built):
    analysis, out = built
    cox = analysis.results["first_line_detail"]["pfs_cox_tce_vs_non_tce"]
    legend = " ".join(_texts(_group(_svg(out / "km_first_line_pfs.svg"), "km-legend")))
    assert f"{cox['estimate']:.2f} (95% CI {cox['ci_low']:.2f}–{cox['ci_high']:.2f})" in legend


def test_single_curve_has_no_comparison_text(built):
    _, out = built
    legend = " ".join(_texts(_group(_svg(out / "km_os.svg"), "km-legend")))
    assert "HR" not in legend and "log-rank" not in legend


def test_at_risk_table_does_not_collide_with_the_axis(built):
    analysis, _ = built
    fits = analysis.fits["first_line_pfs"]
    fig = km_figure([Curve("TCE", fits["tce"], "#0072B2"),
                     Curve("non-TCE", fits["non_tce"], "#E69F00")],
                    "months from the line's start", stats="HR 1.00\nlog-rank p = 1",
                    min_at_risk=5)
    renderer = _renderer(fig)
    ax = next(a for a in fig.axes if a.get_gid() == "km-axes")
    table = next(a for a in fig.axes if a.get_gid() == "at-risk-table")
    above = [ax.xaxis.label.get_window_extent(renderer)]
    above += [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
    below = [t.get_window_extent(renderer) for t in table.texts]
    below += [t.get_window_extent(renderer) for t in table.get_yticklabels()]
    heading = [t for t in table.get_children()
               if hasattr(t, "get_text") and t.get_text() == AT_RISK_TITLE]
    assert len(heading) == 1 and len(table.texts) >= 4
    below.append(heading[0].get_window_extent(renderer))
    for upper in above:
        for lower in below:
            assert not upper.overlaps(lower), (upper, lower)
            assert lower.y1 <= upper.y0  # the whole table sits below the axis label
    # the row labels do not touch the first column of counts
    labels = [t.get_window_extent(renderer) for t in table.get_yticklabels()]
    counts = [t.get_window_extent(renderer) for t in table.texts]
    assert all(not a.overlaps(b) for a in labels for b in counts)


def test_curves_stop_when_fewer_than_n_remain_at_risk(built):
    analysis, _ = built
    fit = analysis.fits["os"]["overall"]
    durations = np.asarray(fit.fitter.durations, dtype=float)
    for n in (1, 5, 20):
        stop = stop_time(fit, n)
        assert at_risk(fit, np.array([stop]))[0] >= n
        assert (durations > stop).sum() < n  # just after the stop, fewer than n remain
        fig = km_figure([Curve("all", fit, "#444444")], "months", min_at_risk=n)
        curve = next(line for ax in fig.axes for line in ax.lines
                     if line.get_gid() == "km-curve-0")
        assert max(curve.get_xdata()) == pytest.approx(stop)
    assert stop_time(fit, fit.n + 1) is None


def test_the_cut_comes_from_rules_toml_and_the_caption_states_it(tmp_path, monkeypatch):
    from connector.report.settings import DEFAULT_RULES_PATH

    assert report_rules().km_min_at_risk == 5  # the shipped rule
    rules = tmp_path / "rules.toml"
    rules.write_text(DEFAULT_RULES_PATH.read_text().replace("km_min_at_risk = 5",
                                                            "km_min_at_risk = 12"))
    monkeypatch.setenv("COHORT_RULES_FILE", str(rules))
    assert report_rules().km_min_at_risk == 12
    analysis = analyze_frames(*demo_frames(40, seed=3))
    write_report(analysis, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Each curve stops when fewer than 12 patients remain at risk." in md
    rules.write_text(DEFAULT_RULES_PATH.read_text().replace("km_min_at_risk = 5",
                                                            "km_min_at_risk = 0"))
    with pytest.raises(ReportRulesError, match="km_min_at_risk"):
        report_rules()


def test_swimmer_legend_outside_rows_car_t_marker_and_best_response(built):
    analysis, out = built
    fig = swimmer_figure(analysis)
    renderer = _renderer(fig)
    ax = fig.axes[0]
    legend = fig.legends[0]
    assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    labels = [t.get_text() for t in legend.get_texts()]
    assert "CAR-T infusion" in labels and "best response VGPR" in labels
    assert not any("_" in label for label in labels)
    assert ax.get_title() == ""
    root = _svg(out / "swimmer.svg")
    n_car_t = int((analysis.lines["subclass"] == "car_t").sum())
    assert n_car_t > 0
    infusion = _group(root, "car-t-infusion")
    assert infusion is not None and len(list(infusion.iter(f"{SVG}use"))) == n_car_t
    for code in ("VGPR", "PR"):
        assert _group(root, f"best-response-{code}") is not None


def test_swimmer_bars_end_at_the_next_line_or_progression(built):
    from connector.report.swimmer import line_bars, swimmer_patients

    analysis, _ = built
    patients = swimmer_patients(analysis)
    patients["y"] = np.arange(len(patients))
    bars = line_bars(analysis.lines, patients)
    end = bars["left"] + bars["width"]
    nxt = bars.groupby("pid")["left"].shift(-1)
    with_next = nxt.notna()
    assert (end[with_next] <= nxt[with_next] + 1e-9).all()
    progressed = bars["pfs_event_months"].notna() & (bars["pfs_event_months"] >= bars["left"])
    assert (end[progressed] <= bars.loc[progressed, "pfs_event_months"] + 0.05 + 1e-9).all()


def test_response_chart_in_percent_with_clinical_names_grouped(built):
    analysis, _ = built
    fig = response_figure(analysis)
    _renderer(fig)
    right = fig.axes[1]
    y_labels = [t.get_text() for t in right.get_yticklabels() if t.get_text()]
    assert y_labels and all(label.endswith("%") for label in y_labels)
    names = [t.get_text() for t in right.get_xticklabels()]
    assert "anti-CD38 antibody" in names and not any("_" in n for n in names)
    tce_names = {"BCMA bispecific antibody", "GPRC5D bispecific antibody", "CAR-T (any target)"}
    positions = [i for i, n in enumerate(names) if n in tce_names]
    assert positions == list(range(len(positions))) and positions  # TCE classes first
    assert all(ax.get_title() == "" for ax in fig.axes)
