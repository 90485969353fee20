"""passkeys for practice assistants too: passkey.assistant_id, passkey.physician_id nullable

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08 03:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('passkey', schema=None) as batch_op:
        batch_op.add_column(sa.Column('assistant_id', sa.Integer(), nullable=True))
        batch_op.alter_column('physician_id',
               existing_type=sa.INTEGER(),
               nullable=True)
        batch_op.create_index(batch_op.f('ix_passkey_assistant_id'), ['assistant_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_passkey_assistant_id_assistant'), 'assistant', ['assistant_id'], ['id'], ondelete='CASCADE')



def downgrade() -> None:
    with op.batch_alter_table('passkey', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_passkey_assistant_id_assistant'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_passkey_assistant_id'))
        batch_op.alter_column('physician_id',
               existing_type=sa.INTEGER(),
               nullable=False)
        batch_op.drop_column('assistant_id')

