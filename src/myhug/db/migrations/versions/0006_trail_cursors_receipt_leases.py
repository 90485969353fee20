"""trail cursors (receipts follow the trail like ATNA), receipt lease owner

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 09:30:00

Receipts used to be inserted by the audit trail itself; now a follower makes
them from the trail. Every event recorded before this migration already has
its receipt row, so the receipts cursor starts at the chain's head. The ATNA
cursor moves into the shared table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('trail_cursor',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('last_seq', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_trail_cursor'))
    )
    op.execute("INSERT INTO trail_cursor (name, last_seq) SELECT 'atna', last_seq FROM atna_cursor WHERE id = 1")
    op.execute("INSERT INTO trail_cursor (name, last_seq) SELECT 'receipts', seq FROM audit_head WHERE id = 1")
    op.drop_table('atna_cursor')
    with op.batch_alter_table('receipt', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_owner', sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('receipt', schema=None) as batch_op:
        batch_op.drop_column('lease_owner')
    op.create_table('atna_cursor',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('last_seq', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_atna_cursor'))
    )
    op.execute("INSERT INTO atna_cursor (id, last_seq) SELECT 1, last_seq FROM trail_cursor WHERE name = 'atna'")
    op.drop_table('trail_cursor')
