"""Issue 13, item 7 (transport part): a redirect (typically to https) is reported as a
redirect with the address to use, not as "body is not valid JSON". Through the fault
proxy in front of sekmet."""

from __future__ import annotations

from fault_proxy import redirect_answer
from typer.testing import CliRunner

from connector.cli import EXIT_SOURCE, app


def test_a_redirect_to_https_is_reported_as_one(proxied, tmp_path):
    server, proxy = proxied
    https = f"https://127.0.0.1:{proxy.port}"
    proxy.rewrite = redirect_answer("/fhir", lambda path: https + path)
    result = CliRunner().invoke(app, ["extract", "--source", server.base_url, "--site", "s",
                                      "--db", f"sqlite:///{tmp_path / 'db.db'}", "--quiet"],
                                catch_exceptions=False)
    assert result.exit_code == EXIT_SOURCE, result.output
    assert "redirect (HTTP 301)" in result.output
    assert f"Set base_url to the server's own address (it redirects to {https}" in result.output
    assert "not valid JSON" not in result.output and "Traceback" not in result.output
