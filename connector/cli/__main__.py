"""``python -m connector.cli``: the same program as ``cohort``."""

from connector.cli import app

app()
