"""Revision files, applied in order by ``connector.db.migrations.migrate``."""
