"""assistants and stand-ins: who may read a physician's documents besides the physician

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('assistant',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('login', sa.String(length=64), nullable=False),
    sa.Column('given_name', sa.String(length=200), nullable=False),
    sa.Column('family_name', sa.String(length=200), nullable=False),
    sa.Column('mobile', sa.String(length=20), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('password_must_change', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('registered', 'activated', 'suspended')", name=op.f('ck_assistant_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assistant')),
    sa.UniqueConstraint('login', name=op.f('uq_assistant_login'))
    )
    op.create_table('delegation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('physician_id', sa.Integer(), nullable=False),
    sa.Column('assistant_id', sa.Integer(), nullable=True),
    sa.Column('stand_in_id', sa.Integer(), nullable=True),
    sa.Column('starts_on', sa.Date(), nullable=True),
    sa.Column('ends_on', sa.Date(), nullable=True),
    sa.Column('notify', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('(assistant_id IS NULL) != (stand_in_id IS NULL)', name=op.f('ck_delegation_one_delegate')),
    sa.ForeignKeyConstraint(['assistant_id'], ['assistant.id'], name=op.f('fk_delegation_assistant_id_assistant'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['physician_id'], ['physician.id'], name=op.f('fk_delegation_physician_id_physician'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['stand_in_id'], ['physician.id'], name=op.f('fk_delegation_stand_in_id_physician'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delegation'))
    )
    with op.batch_alter_table('delegation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_delegation_assistant_id'), ['assistant_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_delegation_physician_id'), ['physician_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_delegation_stand_in_id'), ['stand_in_id'], unique=False)

    with op.batch_alter_table('login_challenge', schema=None) as batch_op:
        batch_op.add_column(sa.Column('assistant_id', sa.Integer(), nullable=True))
        batch_op.alter_column('physician_id',
               existing_type=sa.INTEGER(),
               nullable=True)
        batch_op.create_index(batch_op.f('ix_login_challenge_assistant_id'), ['assistant_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_login_challenge_assistant_id_assistant'), 'assistant', ['assistant_id'], ['id'], ondelete='CASCADE')

    with op.batch_alter_table('mailbox_item', schema=None) as batch_op:
        batch_op.add_column(sa.Column('read_by', sa.String(length=200), nullable=True))

    with op.batch_alter_table('web_session', schema=None) as batch_op:
        batch_op.add_column(sa.Column('assistant_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('acting_for_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_web_session_assistant_id'), ['assistant_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_web_session_assistant_id_assistant'), 'assistant', ['assistant_id'], ['id'], ondelete='CASCADE')
        batch_op.create_foreign_key(batch_op.f('fk_web_session_acting_for_id_physician'), 'physician', ['acting_for_id'], ['id'], ondelete='CASCADE')



def downgrade() -> None:
    with op.batch_alter_table('web_session', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_web_session_acting_for_id_physician'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_web_session_assistant_id_assistant'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_web_session_assistant_id'))
        batch_op.drop_column('acting_for_id')
        batch_op.drop_column('assistant_id')

    with op.batch_alter_table('mailbox_item', schema=None) as batch_op:
        batch_op.drop_column('read_by')

    with op.batch_alter_table('login_challenge', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_login_challenge_assistant_id_assistant'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_login_challenge_assistant_id'))
        batch_op.alter_column('physician_id',
               existing_type=sa.INTEGER(),
               nullable=False)
        batch_op.drop_column('assistant_id')

    with op.batch_alter_table('delegation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_delegation_stand_in_id'))
        batch_op.drop_index(batch_op.f('ix_delegation_physician_id'))
        batch_op.drop_index(batch_op.f('ix_delegation_assistant_id'))

    op.drop_table('delegation')
    op.drop_table('assistant')
