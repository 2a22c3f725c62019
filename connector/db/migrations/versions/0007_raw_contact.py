"""raw_contact: the last day of each patient's trimmed Observations.

Revision 0007 after 0006, 2026-12-05.
"""

from connector.db.migrations.ddl import create_table, drop_table

revision, down_revision = "0007", "0006"


def upgrade() -> None:
    create_table("raw_contact", "id int, site str, patient_ref str, last_day str",
                 unique=("site", "patient_ref"))


def downgrade() -> None:
    drop_table("raw_contact")
