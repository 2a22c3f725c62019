"""Issue 13, item 7: a site config value of the wrong type is named, with exit 2, before
anything is created or the server is asked anything. Through the fault proxy in front of
sekmet, whose request counter shows that a refused run sent nothing."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from connector.cli import EXIT_USAGE, app
from connector.db import get_engine, models
from connector.fhir.config import (
    SITE_MODEL,
    AuthConfig,
    Quirks,
    RetryConfig,
    SiteConfig,
    load_site_config,
)
from connector.fhir.config_model import check_types, strict_model
from connector.fhir.errors import SiteConfigError

RAW = models.SQLModel.metadata.tables["raw_resource"]


@pytest.mark.parametrize(("setting", "named"), [
    ('page_size = "abc"', "page_size must be a whole number, not a string"),
    ("concurrency = 2.5", "concurrency must be a whole number, not a decimal number"),
    ('rate_limit = "fast"', "rate_limit must be a number, not a string"),
    ("detect_deletes = 1", "detect_deletes must be true or false, not a whole number"),
    ('resource_types = "Patient"', "resource_types must be a list, not a string"),
    ('[retry]\nbudget = "x"', "retry.budget must be a whole number"),
    ('[quirks]\nelements = "no"', "quirks.elements must be true or false, not a string"),
    ('[quirks]\nobservation_categories = ["laboratory", 5]',
     "quirks.observation_categories[1] must be a string"),
])
def test_a_wrongly_typed_value_is_named_and_nothing_is_created(proxied, tmp_path, setting,
                                                                named):
    server, proxy = proxied
    config = tmp_path / "site.toml"
    config.write_text(f'name = "site_t"\nbase_url = "{server.base_url}"\n{setting}\n')
    db = tmp_path / "cohort.db"
    result = CliRunner().invoke(app, ["extract", "--source", str(config), "--db",
                                      f"sqlite:///{db}", "-q"])
    assert result.exit_code == EXIT_USAGE, result.output
    assert named in result.output and str(config) in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert proxy.requests == 0  # the server was not asked anything
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.toml"]  # no db, no lock file


def test_the_value_itself_is_not_repeated(tmp_path):
    """A value in the wrong key may be a secret: the message gives its type only."""
    config = tmp_path / "site.toml"
    config.write_text('name = "s"\nbase_url = "https://x/fhir"\n[auth]\ntype = "bearer"\n'
                      'token_env = 12345678\n')
    with pytest.raises(SiteConfigError, match="auth.token_env must be a string") as err:
        load_site_config(config)
    assert "12345678" not in str(err.value)


def test_whole_numbers_are_numbers_and_correct_configs_still_load(tmp_path):
    config = tmp_path / "site.toml"
    config.write_text('name = "s"\nbase_url = "https://x/fhir"\nrate_limit = 5\ntimeout = 30\n'
                      'verify_tls = "ca.pem"\npage_size = 100\n[retry]\nbackoff_max = 10\n')
    loaded = load_site_config(config)
    assert (loaded.rate_limit, loaded.timeout, loaded.page_size) == (5, 30, 100)
    assert loaded.verify_tls == "ca.pem" and loaded.retry.backoff_max == 10


@pytest.mark.parametrize(("path", "record"), [
    ((), SiteConfig), (("auth",), AuthConfig), (("retry",), RetryConfig), (("quirks",), Quirks)])
def test_the_typed_model_has_every_setting_of_the_config(path, record):
    """The model is made from the dataclasses, so a new setting is typed too."""
    model = SITE_MODEL
    for name in path:
        model = model.model_fields[name].annotation
    settings = {f.name for f in dataclasses.fields(record)} - {"path"}
    assert set(model.model_fields) == settings


@dataclasses.dataclass
class _Inner:
    depth: int = 1


@dataclasses.dataclass
class _Settings:
    name: str
    ratio: float = 0.5
    inner: _Inner = dataclasses.field(default_factory=_Inner)


def test_a_setting_added_to_a_dataclass_is_checked_without_a_second_list():
    model = strict_model(_Settings)
    check_types({"name": "x", "ratio": 1, "inner": {"depth": 2}}, "here", model)
    with pytest.raises(SiteConfigError) as err:
        check_types({"ratio": "high", "inner": {"depth": 2.5, "width": 1}}, "here", model)
    assert str(err.value) == ("here: name: is required; ratio must be a number, not a string; "
                              "inner.depth must be a whole number, not a decimal number; "
                              "inner.width: unknown setting")


def test_after_the_fix_the_run_loads_what_a_clean_run_loads(proxied, tmp_path):
    server, proxy = proxied
    config = tmp_path / "site.toml"
    config.write_text(f'name = "site_t"\nbase_url = "{server.base_url}"\nconcurrency = 2.5\n')
    db_url = f"sqlite:///{tmp_path / 'cohort.db'}"
    runner = CliRunner()
    args = ["extract", "--source", str(config), "--db", db_url, "-q", "--scope", "all"]
    assert runner.invoke(app, args).exit_code == EXIT_USAGE
    config.write_text(f'name = "site_t"\nbase_url = "{server.base_url}"\nconcurrency = 2\n')
    fixed = runner.invoke(app, args)
    assert fixed.exit_code == 0, fixed.output
    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    clean = runner.invoke(app, ["extract", "--source", server.base_url, "--site", "site_t",
                                "--db", clean_url, "-q", "--scope", "all"])
    assert clean.exit_code == 0, clean.output
    assert _raw(db_url) == _raw(clean_url) and _raw(db_url)


def _raw(url: str) -> list[tuple]:
    engine = get_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(RAW.c.site, RAW.c.resource_type, RAW.c.resource_id,
                                   RAW.c.content_hash).order_by(
            RAW.c.resource_type, RAW.c.resource_id)).all()
    engine.dispose()
    return [tuple(r) for r in rows]
