"""a withdrawn document keeps a line in "Mes documents": when, and the DPI's reason (sealed)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('mailbox_item', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retracted_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('retraction_blob_id', sa.String(length=20), nullable=True))
        batch_op.create_foreign_key('fk_mailbox_item_retraction_blob_id_sealed_blob', 'sealed_blob',
                                    ['retraction_blob_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('mailbox_item', schema=None) as batch_op:
        batch_op.drop_constraint('fk_mailbox_item_retraction_blob_id_sealed_blob', type_='foreignkey')
        batch_op.drop_column('retraction_blob_id')
        batch_op.drop_column('retracted_at')
