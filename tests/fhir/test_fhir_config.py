"""Site config files: what they may say, what they must not (secret values), and defaults."""

from __future__ import annotations

import pytest

from connector.fhir.config import (
    config_for_url,
    load_site_config,
    read_secret,
    site_name_for_url,
    with_options,
)
from connector.fhir.errors import SiteConfigError

GOOD = """
name = "site_a"
base_url = "https://fhir.example.org/R4/"
scope = "all"
page_size = 500
concurrency = 2
rate_limit = 5

[auth]
type = "smart"
client_id = "mm-cohort"
private_key_file = "keys/site_a.pem"
alg = "ES384"

[retry]
budget = 50

[quirks]
observation_categories = ["laboratory", "exam"]
"""


def test_a_full_site_config(tmp_path):
    path = tmp_path / "site_a.toml"
    path.write_text(GOOD)
    cfg = load_site_config(path)
    assert cfg.name == "site_a" and cfg.base_url == "https://fhir.example.org/R4"
    assert cfg.scope == "all" and cfg.page_size == 500 and cfg.rate_limit == 5
    assert cfg.auth.type == "smart" and cfg.auth.alg == "ES384"
    assert cfg.auth.private_key_file == str(tmp_path / "keys" / "site_a.pem")  # relative to file
    assert cfg.retry.budget == 50 and cfg.retry.max_attempts == 8
    assert cfg.quirks.observation_categories == ["laboratory", "exam"]
    assert "Observation" in cfg.resource_types


@pytest.mark.parametrize(("key", "hint"), [("password", "password_env"), ("token", "token_file"),
                                           ("client_secret", "client_secret_env"),
                                           ("private_key", "private_key_file")])
def test_secret_values_in_the_config_are_refused(tmp_path, key, hint):
    path = tmp_path / "s.toml"
    path.write_text(f'name = "s"\nbase_url = "https://x/fhir"\n[auth]\ntype = "basic"\n'
                    f'{key} = "hunter2-value"\n')
    with pytest.raises(SiteConfigError, match=hint) as err:
        load_site_config(path)
    assert "hunter2-value" not in str(err.value)


@pytest.mark.parametrize(("text", "match"), [
    ('name = "s"\nbase_url = "ftp://x"\n', "http"),
    ('name = "s"\nbase_url = "https://u:p@x/fhir"\n', "credentials"),
    ('name = "s"\nbase_url = "https://x"\nscope = "some"\n', "scope"),
    ('name = "s"\nbase_url = "https://x"\npage_sise = 5\n', "unknown setting"),
    ('name = "s"\nbase_url = "https://x"\n[auth]\ntype = "smart"\nclient_id = "c"\n',
     "private_key_file"),
    ('name = "s"\nbase_url = "https://x"\n[auth]\ntype = "smart"\nclient_id = "c"\n'
     'private_key_file = "k"\nalg = "HS256"\n', "RS384 or ES384"),
    ('base_url = "https://x"\n', "'name' is required"),
    ('name = "s"\nbase_url = [\n', "not valid TOML"),
])
def test_bad_configs_are_explained(tmp_path, text, match):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(SiteConfigError, match=match):
        load_site_config(path)


def test_url_sources_and_options():
    cfg = config_for_url("http://127.0.0.1:8080/fhir/")
    assert cfg.name == "127.0.0.1_8080" and cfg.auth.type == "none"
    assert site_name_for_url("https://hapi.fhir.org/baseR4") == "hapi.fhir.org"
    assert config_for_url("http://h/fhir", "site_b").name == "site_b"
    changed = with_options(cfg, {"scope": "all", "page_size": 7, "text_search": False,
                                 "resource_types": ["Patient", "Observation"]})
    assert changed.scope == "all" and changed.page_size == 7 and not changed.quirks.text_search
    assert changed.resource_types == ("Patient", "Observation") and cfg.scope == "cohort"
    with pytest.raises(SiteConfigError, match="unknown extraction option"):
        with_options(cfg, {"pagesize": 1})


def test_secrets_come_from_env_or_file(tmp_path, monkeypatch):
    monkeypatch.setenv("T_SECRET", " s3cret \n")
    assert read_secret("T_SECRET", None, "x") == "s3cret"
    f = tmp_path / "secret"
    f.write_text("from-file\n")
    monkeypatch.delenv("T_SECRET")
    assert read_secret("T_SECRET", str(f), "x") == "from-file"
    with pytest.raises(SiteConfigError, match="cannot read"):
        read_secret(None, str(tmp_path / "none"), "x")
