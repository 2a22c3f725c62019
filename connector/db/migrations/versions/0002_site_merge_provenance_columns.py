"""Site: provenance of a merged load (pseudonymized, key fingerprint, date shift, when).

Revision 0002 after 0001, 2026-11-26.
"""

from connector.db.migrations.ddl import add_columns, drop_columns

revision, down_revision = "0002", "0001"


def upgrade() -> None:
    add_columns("site", "pseudonymized bool=0, key_fingerprint str?, date_shift_days int=0,"
                        " merged_at time?")


def downgrade() -> None:
    drop_columns("site", "merged_at", "date_shift_days", "key_fingerprint", "pseudonymized")
