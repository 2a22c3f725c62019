"""What an export carries out of the site: patient keys, never source ids, names or free
text (the merge tests' identifying site database), and dates shifted per patient with
intervals kept when asked."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "multicenter"))
from multicenter_sites import SECRET, build_site, identifiers  # noqa: E402

from connector.db import get_engine, init_db  # noqa: E402
from connector.export import export_files  # noqa: E402
from connector.keys import patient_key  # noqa: E402


@pytest.fixture
def site_db(tmp_path):
    engine = get_engine(f"sqlite:///{tmp_path / 'site.db'}")
    init_db(engine)
    build_site(engine, "site_a", n=6)
    yield engine
    engine.dispose()


def _all_text(folder: Path) -> str:
    parts = []
    for path in sorted(folder.iterdir()):
        if path.suffix == ".parquet":
            parts.append(pq.read_table(path).to_pandas().to_csv())
        else:
            parts.append(path.read_text())
    return "\n".join(parts)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_no_identifier_of_the_site_leaves(site_db, tmp_path, fmt):
    out = tmp_path / fmt
    export_files(site_db, out, fmt, secret=SECRET)
    text = _all_text(out)
    leaked = [value for value in identifiers("site_a", 6) if value in text]
    assert leaked == []
    assert "Ellsworth" not in text and "MRN-" not in text
    keys = pd.read_csv(out / "patient.csv")["patient_key"] if fmt == "csv" else \
        pq.read_table(out / "patient.parquet").column("patient_key").to_pylist()
    assert sorted(keys) == sorted(patient_key("site_a", f"MRN-SITE_A-{i:05d}", SECRET)
                                  for i in range(6))


def test_date_shift_moves_dates_and_keeps_intervals(site_db, tmp_path):
    export_files(site_db, tmp_path / "plain", "parquet", secret=SECRET)
    export_files(site_db, tmp_path / "shifted", "parquet", secret=SECRET, date_shift_days=30)
    plain = pq.read_table(tmp_path / "plain" / "analysis_patient.parquet").to_pandas()
    shifted = pq.read_table(tmp_path / "shifted" / "analysis_patient.parquet").to_pandas()
    assert (plain["index_date"] != shifted["index_date"]).any()
    for col in ("os_months", "ttnt_months", "cart_to_progression_months"):
        pd.testing.assert_series_equal(plain[col], shifted[col])
    # a Condition's onset moves with the patient's other dates (200 days before CAR-T)
    for folder in ("plain", "shifted"):
        onset = pq.read_table(tmp_path / folder / "condition_record.parquet").to_pandas()
        index = pq.read_table(tmp_path / folder / "analysis_patient.parquet").to_pandas()
        both = onset.merge(index, on="patient_key")
        assert len(both) == 6
        assert ((both["index_date"] - both["onset_date"]).map(lambda d: d.days) == 200).all()
    plain_onset = pq.read_table(tmp_path / "plain" / "condition_record.parquet").to_pandas()
    shifted_onset = pq.read_table(tmp_path / "shifted" / "condition_record.parquet").to_pandas()
    assert (plain_onset.sort_values("patient_key")["onset_date"].to_numpy()
            != shifted_onset.sort_values("patient_key")["onset_date"].to_numpy()).any()
