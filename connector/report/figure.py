"""Shared parts of the report's figures: the colour-blind-safe palette and the saver.

Every figure is written twice: a 300-dpi PNG (report.md links it; journals ask for at
least 300 dpi) and an SVG beside it (report.html embeds it; vector, editable text).
Figures are built with ``Figure`` + ``FigureCanvasAgg`` rather than pyplot so no global
backend or figure state is touched (a notebook's inline backend keeps working). Neither
file carries a date or a version, and SVG ids come from a fixed salt, so the same data
gives the same bytes on the same installation. Titles belong in the captions of
report.md/html; a figure's title is kept only as file metadata.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PNG_DPI = 300

# Okabe & Ito (2008) "Color Universal Design" palette: distinguishable with the common
# colour-vision deficiencies; the TCE / non-TCE pair is its blue and orange.
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9",
             "green": "#009E73", "yellow": "#F0E442", "blue": "#0072B2",
             "vermillion": "#D55E00", "purple": "#CC79A7"}
COLORS = {"tce": OKABE_ITO["blue"], "non_tce": OKABE_ITO["orange"], "overall": "#444444",
          "bispecific": OKABE_ITO["blue"], "car_t": "#882255"}

# Regimen classes (therapy_line.subclass) in the swimmer plot: Okabe–Ito first, then Paul
# Tol's "muted" scheme (also colour-blind safe) for the classes beyond its eight colours.
SUBCLASS_COLORS = {
    "car_t": "#882255",  # Tol wine
    "bcma_bispecific": OKABE_ITO["blue"],
    "gprc5d_bispecific": OKABE_ITO["sky_blue"],
    "fcrh5_bispecific": "#332288",  # Tol indigo
    "autologous_transplant": "#999933",  # Tol olive
    "bcma_adc": OKABE_ITO["purple"],
    "xpo1_inhibitor": OKABE_ITO["orange"],
    "bcl2_inhibitor": OKABE_ITO["yellow"],
    "anti_cd38": OKABE_ITO["green"],
    "anti_slamf7": "#44AA99",  # Tol teal
    "chemotherapy": OKABE_ITO["vermillion"],
    "imid_pi": "#DDCC77",  # Tol sand
    "other": "#AAAAAA",
}
OTHER_COLOR = "#AAAAAA"

SVG_RC = {"svg.fonttype": "none",  # text stays text: searchable, editable, testable
          "svg.hashsalt": "cohort-report"}  # fixed ids, so the same data gives the same file


def save_figure(fig: Figure, png_path: Path, title: str = "") -> Path:
    """Write ``fig`` as ``png_path`` (300 dpi) and the same name with .svg; return the PNG.

    ``title`` goes into the files' metadata only; the reader's title is the caption.
    """
    FigureCanvasAgg(fig)
    png_path = Path(png_path)
    with rc_context(SVG_RC):
        fig.savefig(png_path.with_suffix(".svg"), format="svg",
                    metadata={"Date": None, "Creator": None, "Title": title or None})
    fig.savefig(png_path, format="png", dpi=PNG_DPI,
                metadata={"Software": None, **({"Title": title} if title else {})})
    return png_path


def no_data(ax, text: str = "no data") -> None:  # noqa: ANN001
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777")
    ax.set_xticks([])
    ax.set_yticks([])
