"""a DPI client's audit feed holds its own submissions' events unless it is made to see them all

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 23:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('dpi_client', schema=None) as batch_op:
        batch_op.add_column(sa.Column('all_events', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.create_index('ix_audit_event_submission_id', ['submission_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_event_submission_id')
    with op.batch_alter_table('dpi_client', schema=None) as batch_op:
        batch_op.drop_column('all_events')
