"""S/MIME certificates pinned beside OpenPGP keys: recipient_key.envelope

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('recipient_key', schema=None) as batch_op:
        batch_op.add_column(sa.Column('envelope', sa.String(length=10), server_default='openpgp', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('recipient_key', schema=None) as batch_op:
        batch_op.drop_column('envelope')
