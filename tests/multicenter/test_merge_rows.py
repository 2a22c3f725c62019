"""Merging hand-built site databases: pseudonymized, replace-per-site, all or nothing."""

from __future__ import annotations

import datetime as dt

import pytest
from multicenter_sites import (
    SECRET,
    build_site,
    content,
    count,
    identifiers,
    ids,
    text_values,
)
from sqlalchemy import String, delete, select, update
from typer.testing import CliRunner

import connector.merge.copying as merge_mod
from connector.analysis.completeness import load_quality
from connector.cli import EXIT_USAGE, app
from connector.db import get_engine, init_db, models
from connector.keys import key_fingerprint, patient_key, resource_key
from connector.mapping.unmapped import stored_unmapped
from connector.merge import (
    MERGED_TABLES,
    SITE_COUNT_TABLES,
    SITE_COUNT_TEXT,
    UNCODED,
    MergeRefused,
    column_kinds,
    merge_sites,
)

T = models.SQLModel.metadata.tables


def _db(tmp_path, name: str):
    engine = get_engine(f"sqlite:///{tmp_path / name}")
    init_db(engine)
    return engine


@pytest.fixture
def sites(tmp_path):
    a, b = _db(tmp_path, "site_a.db"), _db(tmp_path, "site_b.db")
    build_site(a, "site_a", 4)
    build_site(b, "site_b", 3, day0=dt.date(2021, 6, 15))
    yield a, b
    a.dispose()
    b.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def central(request, tmp_path):
    if request.param == "sqlite":
        engine = _db(tmp_path, "central.db")
    else:
        engine = get_engine(request.getfixturevalue("pg_url"))
        init_db(engine)
    yield engine
    engine.dispose()


def test_every_text_column_of_merged_tables_is_classified():
    """A text column added to a merged table must be declared keep or drop in POLICIES."""
    unclassified = [f"{name}.{col}" for name in MERGED_TABLES
                    for col, kind in column_kinds(name).items() if kind == "unclassified"]
    assert unclassified == []
    assert {"condition_record", "patient_baseline"} <= set(MERGED_TABLES)
    text_columns = {name: {c.name for c in T[name].columns
                           if isinstance(getattr(c.type, "impl_instance", c.type), String)}
                    for name in SITE_COUNT_TABLES}
    assert text_columns == {name: set(SITE_COUNT_TEXT[name]) for name in SITE_COUNT_TABLES}


def test_merge_pseudonymizes_ids_and_drops_free_text(sites, central):
    done = merge_sites(central, list(sites), secret=SECRET)
    assert [d.site for d in done] == ["site_a", "site_b"]
    assert done[0].rows["patient"] == 4 and done[0].rows["lab_result"] == 12
    assert done[0].keyed and done[0].pseudonymized_here

    with central.connect() as conn:
        patients = conn.execute(select(T["patient"]).where(T["patient"].c.site == "site_a")).all()
        expected = {patient_key("site_a", sid, SECRET) for sid in ids("site_a", 4)}
        assert {p.source_id for p in patients} == expected
        assert all(p.patient_key == p.source_id and p.version_id is None for p in patients)
        exposures = conn.execute(select(T["medication_exposure"])).all()
        assert all(e.display is None and e.version_id is None for e in exposures)
        assert all(e.code == "2619203" and e.ingredient == "teclistamab" for e in exposures)
        sid0 = ids("site_a", 4)[0]
        assert resource_key("site_a", "MedicationAdministration", f"MA-{sid0}", SECRET) in {
            e.source_id for e in exposures}
        labs = conn.execute(select(T["lab_result"])).all()
        assert all(r.original_value is None and r.original_unit is None for r in labs)
        assert {r.value for r in labs} == {1.5, 1.0, 0.5}
        conditions = conn.execute(select(T["condition_record"])
                                  .where(T["condition_record"].c.site == "site_a")).all()
        assert {c.patient_source_id for c in conditions} == expected
        assert {c.source_id for c in conditions} == {
            resource_key("site_a", "Condition", f"CO-{sid}", SECRET) for sid in ids("site_a", 4)}
        assert all(c.display is None and c.version_id is None and c.code == "726107005"
                   and c.finding == "del_17p" for c in conditions)
        baseline = conn.execute(select(T["patient_baseline"])
                                .where(T["patient_baseline"].c.site == "site_a")).all()
        assert {b.source_id for b in baseline} == expected
        assert sorted((b.prior_lines, b.del_17p, b.riss_stage, b.ldh) for b in baseline) == [
            (3, "absent", None, 200.0), (3, "absent", None, 320.0),
            (4, "present", "II", 260.0), (4, "present", "II", 380.0)]
        codes = conn.execute(select(T["unmapped_code"])
                             .where(T["unmapped_code"].c.site == "site_a")).all()
        assert sorted((c.resource_type, c.code, c.text, c.display, c.n) for c in codes) == [
            ("MedicationAdministration", "", "", UNCODED, 3), ("Observation", "718-7", "", "", 8)]
        quarantined = conn.execute(select(T["quarantine_count"])
                                   .where(T["quarantine_count"].c.site == "site_a")).all()
        assert sorted((q.stage, q.resource_type, q.n) for q in quarantined) == [
            ("extract", "", 1), ("map", "Patient", 4)]
        site_row = conn.execute(select(T["site"]).where(T["site"].c.name == "site_a")).one()
        assert site_row.pseudonymized and site_row.key_fingerprint == key_fingerprint(SECRET)
        assert site_row.date_shift_days == 0 and site_row.merged_at is not None
    for name in ("raw_resource", "quarantine", "extract_run", "sync_state"):
        assert count(central, name) == 0
    secrets = identifiers("site_a", 4) + identifiers("site_b", 3)
    leaks = [(t, c) for t, c, v in text_values(central) for s in secrets if s in v]
    assert leaks == []


def test_merging_the_same_site_twice_changes_nothing(sites, central):
    merge_sites(central, list(sites), secret=SECRET)
    first = content(central)
    done = merge_sites(central, [sites[0]], secret=SECRET)
    assert done[0].replaced["patient"] == 4
    assert content(central) == first
    assert count(central, "lab_result") == 12 + 9


def test_a_site_sending_again_replaces_its_own_rows_only(sites, central):
    a, b = sites
    merge_sites(central, [a, b], secret=SECRET)
    site_b_before = content(central, site="site_b")
    gone = ids("site_a", 4)[0]
    with a.begin() as conn:
        for name in ("lab_result", "medication_exposure", "procedure_event", "condition_record",
                     "therapy_line", "patient_baseline"):
            col = T[name].c.get("patient_source_id", T[name].c.source_id)
            conn.execute(delete(T[name]).where(col == gone))
        conn.execute(delete(T["cohort_patient"]).where(T["cohort_patient"].c.source_id == gone))
        conn.execute(delete(T["patient"]).where(T["patient"].c.source_id == gone))
    merge_sites(central, [a], secret=SECRET)
    assert content(central, site="site_b") == site_b_before
    with central.connect() as conn:
        keys = set(conn.execute(select(T["patient"].c.patient_key)
                                .where(T["patient"].c.site == "site_a")).scalars())
    assert patient_key("site_a", gone, SECRET) not in keys and len(keys) == 3
    assert count(central, "lab_result") == 9 + 9


def test_a_failed_site_leaves_the_target_as_it_was(sites, central, monkeypatch):
    merge_sites(central, list(sites), secret=SECRET)
    before = content(central)
    real = merge_mod.pseudonymize_row

    def failing(name, row, keys):
        if name == "therapy_line":  # the last table: everything before is already inserted
            raise RuntimeError("disk full")
        return real(name, row, keys)

    monkeypatch.setattr(merge_mod, "pseudonymize_row", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        merge_sites(central, [sites[0]], secret=SECRET)
    assert content(central) == before


def test_unkeyed_sites_are_refused_unless_allowed(tmp_path, central):
    site = _db(tmp_path, "unkeyed.db")
    build_site(site, "site_a", 2, secret=None)
    with pytest.raises(MergeRefused, match="allow-unkeyed"):
        merge_sites(central, [site], secret=None)
    assert count(central, "patient") == 0
    done = merge_sites(central, [site], secret=None, allow_unkeyed=True)
    assert not done[0].keyed
    with central.connect() as conn:
        row = conn.execute(select(T["site"])).one()
    assert row.key_fingerprint is None and row.pseudonymized


def test_keys_made_with_another_secret_are_refused(tmp_path, central):
    site = _db(tmp_path, "other.db")
    build_site(site, "site_a", 2, secret=b"a different secret, also long enough")
    with pytest.raises(MergeRefused, match="2 of 2 patient keys"):
        merge_sites(central, [site], secret=SECRET)
    with pytest.raises(MergeRefused, match="not made with this secret"):
        merge_sites(central, [site], secret=SECRET, allow_unkeyed=True)


def test_date_shift_needs_a_secret(tmp_path, central):
    site = _db(tmp_path, "unkeyed.db")
    build_site(site, "site_a", 2, secret=None)
    with pytest.raises(MergeRefused, match="date shifting needs a key secret"):
        merge_sites(central, [site], secret=None, allow_unkeyed=True, date_shift_days=10)


def _dates_by_patient(engine, site: str) -> dict[str, list[dt.date]]:
    """Every date of every patient (keyed by the id the table holds), in a fixed order."""
    out: dict[str, list[dt.date]] = {}
    with engine.connect() as conn:
        for name, pcol in (("patient", "source_id"), ("procedure_event", "patient_source_id"),
                           ("medication_exposure", "patient_source_id"),
                           ("lab_result", "patient_source_id"),
                           ("condition_record", "patient_source_id"),
                           ("cohort_patient", "source_id"),
                           ("therapy_line", "source_id")):
            t = T[name]
            dcols = [c for c in t.columns if c.type.python_type is dt.date]
            rows = conn.execute(select(t.c[pcol], *dcols).where(t.c.site == site)
                                .order_by(t.c.id)).all()
            for pid, *dates in rows:
                out.setdefault(pid, []).extend(dates)
    return out


def test_date_shift_moves_each_patient_consistently_and_keeps_intervals(sites, central):
    a, _ = sites
    merge_sites(central, [a], secret=SECRET, date_shift_days=60)
    before = _dates_by_patient(a, "site_a")
    after = _dates_by_patient(central, "site_a")
    offsets = set()
    for sid, dates in before.items():
        shifted = after[patient_key("site_a", sid, SECRET)]
        deltas = {(s - d).days for d, s in zip(dates, shifted, strict=True) if d is not None}
        assert [d is None for d in dates] == [s is None for s in shifted]
        assert len(deltas) == 1  # one offset for every date of the patient
        offset = deltas.pop()
        assert -60 <= offset <= 60
        offsets.add(offset)
    assert len(offsets) > 1
    with central.connect() as conn:
        assert conn.execute(select(T["site"].c.date_shift_days)).scalar() == 60


def _direct_and_via_shares(sites, tmp_path, pg_url):  # noqa: ANN202
    """(direct merge, share file of site_a, central merge of both share files, its result):
    the two ways to a central database, with the same secret and date shift."""
    a, b = sites
    direct = get_engine(pg_url)
    init_db(direct)
    merge_sites(direct, [a, b], secret=SECRET, date_shift_days=30)
    share_a, share_b = _db(tmp_path, "share_a.db"), _db(tmp_path, "share_b.db")
    merge_sites(share_a, [a], secret=SECRET, date_shift_days=30)
    merge_sites(share_b, [b], secret=SECRET, date_shift_days=30)
    central = _db(tmp_path, "central_from_shares.db")
    done = merge_sites(central, [share_a, share_b], secret=None)  # the center has no secret
    return direct, share_a, central, done


def test_share_file_then_central_equals_direct_merge(sites, tmp_path, pg_url):
    direct, share_a, central, done = _direct_and_via_shares(sites, tmp_path, pg_url)
    assert not any(d.pseudonymized_here for d in done)
    assert content(central) == content(direct)
    with pytest.raises(MergeRefused, match="already pseudonymized"):
        merge_sites(central, [share_a], date_shift_days=30)
    direct.dispose()


def _unmapped_totals(engine, site: str) -> dict[tuple[str, str, str], int]:
    """The unmapped counts of ``site`` by resource type, system and code (text-only names
    together), as the report's unmapped section adds them up."""
    counts, _ = stored_unmapped(engine, [site])
    totals: dict[tuple[str, str, str], int] = {}
    for (rtype, system, code, _), n in counts.items():
        totals[(rtype, system, code)] = totals.get((rtype, system, code), 0) + n
    return totals


def test_quality_counts_travel_without_the_quarantine(sites, tmp_path, pg_url):
    """Data completeness reads the same quarantined and unmapped counts per site on the
    sites' own databases, on a direct merge and on a merge of share files; no
    quarantined body, id or reason travels."""
    a, b = sites
    own = {**load_quality(a), **load_quality(b)}
    assert own == {"site_a": {"quarantined": 5, "unmapped_observations": 8},
                   "site_b": {"quarantined": 4, "unmapped_observations": 6}}
    direct, share_a, central, _ = _direct_and_via_shares(sites, tmp_path, pg_url)
    for merged in (direct, share_a, central):
        assert count(merged, "quarantine") == 0
    assert load_quality(share_a) == {"site_a": own["site_a"]}
    assert load_quality(direct) == own == load_quality(central)
    for site, engine in (("site_a", a), ("site_b", b)):
        assert _unmapped_totals(central, site) == _unmapped_totals(engine, site)
        assert _unmapped_totals(direct, site) == _unmapped_totals(engine, site)
    again = merge_sites(central, [share_a])  # replaced, not added
    assert again[0].replaced["quarantine_count"] == 2
    assert load_quality(central) == own
    direct.dispose()


def test_target_with_site_data_and_bad_source_sets_are_refused(sites, tmp_path):
    a, _ = sites
    other = _db(tmp_path, "other_site_a.db")
    build_site(other, "site_a", 1)
    with pytest.raises(MergeRefused, match="raw FHIR data"):
        merge_sites(a, [other], secret=SECRET)
    with pytest.raises(MergeRefused, match="same database"):
        merge_sites(a, [a], secret=SECRET)
    twin = _db(tmp_path, "twin.db")
    build_site(twin, "site_a", 1)
    central = _db(tmp_path, "central.db")
    with pytest.raises(MergeRefused, match="two source databases"):
        merge_sites(central, [a, twin], secret=SECRET)
    with pytest.raises(MergeRefused, match="not found"):
        merge_sites(central, [a], secret=SECRET, sites=["site_z"])
    assert count(central, "patient") == 0


def test_pseudonymized_source_with_leftover_ids_is_refused(sites, tmp_path):
    a, _ = sites
    share = _db(tmp_path, "share.db")
    merge_sites(share, [a], secret=SECRET)
    with share.begin() as conn:  # simulate a tampered or broken share file
        conn.execute(update(T["patient"]).where(T["patient"].c.id == 1)
                     .values(source_id="MRN-LEAK"))
    central = _db(tmp_path, "central.db")
    with pytest.raises(MergeRefused, match="still carry a source id"):
        merge_sites(central, [share])


def test_cli_merge_reads_the_secret_from_a_file(sites, tmp_path, monkeypatch):
    a, b = sites
    secret_file = tmp_path / "key"
    secret_file.write_bytes(SECRET)
    monkeypatch.delenv("COHORT_KEY_SECRET", raising=False)
    monkeypatch.delenv("COHORT_KEY_SECRET_FILE", raising=False)
    into = f"sqlite:///{tmp_path / 'cli_central.db'}"
    files = [str(tmp_path / "site_a.db"), str(tmp_path / "site_b.db")]
    runner = CliRunner()
    refused = runner.invoke(app, ["merge", "--into", into, *files])
    assert refused.exit_code == EXIT_USAGE
    assert "allow-unkeyed" in refused.output
    monkeypatch.setenv("COHORT_KEY_SECRET_FILE", str(secret_file))
    ok = runner.invoke(app, ["merge", "--into", into, "--date-shift-days", "14", *files])
    assert ok.exit_code == 0, ok.output
    assert "site site_a" in ok.output and "keyed: yes" in ok.output
    central = get_engine(into)
    assert count(central, "patient") == 7
    assert SECRET.decode() not in ok.output
    central.dispose()
