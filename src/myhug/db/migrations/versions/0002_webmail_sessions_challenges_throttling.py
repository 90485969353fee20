"""webmail sessions, challenges, throttling

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 13:39:18.073817
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('login_throttle',
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_login_throttle'))
    )
    op.create_table('login_challenge',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('physician_id', sa.Integer(), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('sends', sa.Integer(), nullable=False),
    sa.Column('last_sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['physician_id'], ['physician.id'], name=op.f('fk_login_challenge_physician_id_physician'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_challenge'))
    )
    with op.batch_alter_table('login_challenge', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_login_challenge_physician_id'), ['physician_id'], unique=False)

    op.create_table('web_session',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('physician_id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=20), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('challenge_id', sa.String(length=32), nullable=True),
    sa.Column('via', sa.String(length=10), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['physician_id'], ['physician.id'], name=op.f('fk_web_session_physician_id_physician'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_web_session'))
    )
    with op.batch_alter_table('web_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_web_session_physician_id'), ['physician_id'], unique=False)

    with op.batch_alter_table('physician', schema=None) as batch_op:
        batch_op.add_column(sa.Column('digest_sent_at', sa.DateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('physician', schema=None) as batch_op:
        batch_op.drop_column('digest_sent_at')

    with op.batch_alter_table('web_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_web_session_physician_id'))

    op.drop_table('web_session')
    with op.batch_alter_table('login_challenge', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_login_challenge_physician_id'))

    op.drop_table('login_challenge')
    op.drop_table('login_throttle')
