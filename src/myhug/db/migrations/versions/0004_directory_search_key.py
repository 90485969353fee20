"""directory search key

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 14:05:09.103993
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('physician', schema=None) as batch_op:
        batch_op.add_column(sa.Column('search_name', sa.String(length=420), nullable=False, server_default=""))
        batch_op.create_index(batch_op.f('ix_physician_search_name'), ['search_name'], unique=False)
    # Existing physicians get their folded names now (the folding is code, not SQL).
    from myhug.directory.search import search_key

    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT id, given_name, family_name FROM physician")).all()
    for physician_id, given_name, family_name in rows:
        connection.execute(sa.text("UPDATE physician SET search_name = :key WHERE id = :id"),
                           {"key": search_key(given_name or "", family_name or ""), "id": physician_id})



def downgrade() -> None:
    with op.batch_alter_table('physician', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_physician_search_name'))
        batch_op.drop_column('search_name')

