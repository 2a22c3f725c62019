"""The terminal: log lines above the bars, choices in the help, --version, analyze's bar."""

from __future__ import annotations

import io
import logging
import re

from rich.console import Console
from typer.testing import CliRunner

import connector
from connector import pipeline
from connector.cli import app
from connector.progress import Progress, log_handler

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _console() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=100)


def _lines(console: Console) -> list[str]:
    text = ANSI.sub("", console.file.getvalue())  # type: ignore[attr-defined]
    return [line for part in text.split("\r") for line in part.split("\n")]


def test_a_log_line_during_a_bar_is_printed_whole_above_it():
    console = _console()
    log = logging.getLogger("connector.test_terminal")
    handler = log_handler(console)
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        with Progress(enabled=True, console=console).task("map", total=4) as advance:
            advance(2)
            log.info("site_a: half of the resources mapped")
            advance(2)
    finally:
        log.removeHandler(handler)
        log.propagate = True
        log.setLevel(logging.NOTSET)
    lines = _lines(console)
    logged = [line for line in lines if "half of the resources mapped" in line]
    assert logged, lines
    for line in logged:  # the message on a line of its own, not inside a bar
        assert "━" not in line and not line.lstrip().startswith("map")
        assert "INFO" in line
    assert any("map" in line and "4/4" in line for line in lines)


def test_without_a_terminal_log_lines_keep_the_plain_format():
    handler = log_handler(rich=False)
    record = logging.LogRecord("connector.x", logging.INFO, __file__, 1, "done", None, None)
    assert handler.format(record) == "INFO connector.x: done"


def test_help_lists_the_choices_of_scope_and_bulk_level():
    result = CliRunner().invoke(app, ["extract", "--help"], env={"COLUMNS": "200"},
                                terminal_width=200)
    assert result.exit_code == 0
    text = ANSI.sub("", result.output)
    assert "cohort|all|patients" in text
    assert "system|patient|group" in text


def test_an_unknown_choice_is_usage_error_2(tmp_path):
    result = CliRunner().invoke(app, ["extract", "--source", str(tmp_path), "--scope",
                                      "everything", "--db", f"sqlite:///{tmp_path}/x.db"])
    assert result.exit_code == 2
    assert "everything" in ANSI.sub("", result.output)
    assert not (tmp_path / "x.db").exists()


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"cohort {connector.__version__}"


def test_analyze_shows_a_bar(built_cohort, tmp_path):
    console = _console()
    engine = pipeline.open_db(built_cohort)
    try:
        pipeline.analyze(engine, tmp_path / "report",
                         progress=Progress(enabled=True, console=console))
    finally:
        engine.dispose()
    bars = [line for line in _lines(console) if line.lstrip().startswith("analyze")]
    assert bars and any("3/3" in line for line in bars), _lines(console)
