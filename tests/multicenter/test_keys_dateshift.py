"""Keys, resource keys and date shifts: deterministic, keyed, and interval-preserving."""

from __future__ import annotations

import datetime as dt

import pytest

from connector.keys import (
    SecretError,
    date_offset,
    is_keyed,
    key_fingerprint,
    load_secret,
    patient_key,
    resource_key,
    shift_date,
)

SECRET = b"0123456789abcdef0123456789abcdef"


def test_patient_key_is_stable_and_depends_on_site_and_secret():
    key = patient_key("site_a", "123", SECRET)
    assert key == patient_key("site_a", "123", SECRET)
    assert len(key) == 32 and int(key, 16) >= 0
    assert key != patient_key("site_b", "123", SECRET)
    assert key != patient_key("site_a", "123", b"another secret of enough length")
    assert key != patient_key("site_a", "123")  # unkeyed
    assert "123" not in key


def test_is_keyed_tells_keyed_from_unkeyed():
    keyed, unkeyed = patient_key("s", "p1", SECRET), patient_key("s", "p1")
    assert is_keyed("s", "p1", keyed, SECRET)
    assert not is_keyed("s", "p1", unkeyed, SECRET)
    assert is_keyed("s", "p1", unkeyed, None)


def test_resource_key_is_unlinkable_to_the_patient_key():
    assert resource_key("s", "Patient", "p1", SECRET) != patient_key("s", "p1", SECRET)
    assert resource_key("s", "Procedure", "x", SECRET) != resource_key("s", "Observation", "x",
                                                                         SECRET)
    assert resource_key("s", "Procedure", "x", SECRET) == resource_key("s", "Procedure", "x",
                                                                         SECRET)


def test_fingerprint_identifies_the_secret_without_revealing_it():
    assert key_fingerprint(None) is None
    fp = key_fingerprint(SECRET)
    assert fp == key_fingerprint(SECRET) and len(fp) == 16
    assert fp != key_fingerprint(SECRET + b"x")
    assert SECRET.hex()[:16] != fp


def test_date_offset_range_sign_and_consistency():
    offsets = [date_offset("s", f"p{i}", SECRET, 30) for i in range(300)]
    assert all(-30 <= o <= 30 for o in offsets)
    assert min(offsets) < -20 and max(offsets) > 20  # spread over the whole window
    assert len(set(offsets)) > 40
    assert offsets == [date_offset("s", f"p{i}", SECRET, 30) for i in range(300)]
    assert date_offset("s", "p1", SECRET, 0) == 0


def test_date_offset_needs_a_secret():
    with pytest.raises(SecretError):
        date_offset("s", "p1", None, 10)
    assert date_offset("s", "p1", None, 0) == 0


def test_shift_date_keeps_intervals():
    a, b = dt.date(2022, 12, 20), dt.date(2023, 3, 1)
    days = date_offset("s", "p9", SECRET, 45)
    assert shift_date(b, days) - shift_date(a, days) == b - a
    assert shift_date(None, 5) is None
    assert shift_date(a, 0) == a


def test_load_secret_from_file(tmp_path, monkeypatch):
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    monkeypatch.delenv("COHORT_KEY_SECRET", raising=False)
    monkeypatch.setenv("COHORT_KEY_SECRET_FILE", str(path))
    assert load_secret() == SECRET


def test_load_secret_rejects_short_or_missing_files(tmp_path, monkeypatch):
    path = tmp_path / "secret"
    path.write_bytes(b"short\n")
    monkeypatch.setenv("COHORT_KEY_SECRET_FILE", str(path))
    with pytest.raises(SecretError, match="shorter"):
        load_secret()
    monkeypatch.setenv("COHORT_KEY_SECRET_FILE", str(tmp_path / "absent"))
    with pytest.raises(SecretError, match="cannot be read"):
        load_secret()


def test_load_secret_none_without_configuration(monkeypatch):
    monkeypatch.delenv("COHORT_KEY_SECRET_FILE", raising=False)
    monkeypatch.delenv("COHORT_KEY_SECRET", raising=False)
    assert load_secret() is None
