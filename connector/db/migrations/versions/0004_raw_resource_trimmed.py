"""raw_resource.trimmed (Observations stored as their code only) and the map stage's index.

Revision 0004 after 0003, 2026-11-26.
"""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0004", "0003"

KEPT = ["site", "resource_type", "trimmed", "deleted"]


def upgrade() -> None:
    with op.batch_alter_table("raw_resource", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trimmed", sa.String(), nullable=True))
        batch_op.drop_index(batch_op.f("ix_raw_resource_resource_type"))
        batch_op.drop_index(batch_op.f("ix_raw_resource_site"))
        batch_op.create_index("ix_raw_resource_kept", KEPT, unique=False)


def downgrade() -> None:
    with op.batch_alter_table("raw_resource", schema=None) as batch_op:
        batch_op.drop_index("ix_raw_resource_kept")
        batch_op.create_index(batch_op.f("ix_raw_resource_site"), ["site"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_raw_resource_resource_type"), ["resource_type"], unique=False
        )
        batch_op.drop_column("trimmed")
