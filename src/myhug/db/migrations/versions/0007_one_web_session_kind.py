"""one kind of web session (physicians' and staff's), with a role

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 10:00:00

Staff sessions move into `web_session`; open staff sessions end with the
upgrade (the staff log in again).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('web_session', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=10), server_default='physician', nullable=False))
        batch_op.add_column(sa.Column('staff_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('pending', sa.JSON(), nullable=True))
        batch_op.alter_column('physician_id', existing_type=sa.Integer(), nullable=True)
        batch_op.create_index(batch_op.f('ix_web_session_staff_id'), ['staff_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_web_session_staff_id_staff_member'), 'staff_member', ['staff_id'],
                                    ['id'], ondelete='CASCADE')
    with op.batch_alter_table('staff_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_staff_session_staff_id'))
    op.drop_table('staff_session')


def downgrade() -> None:
    op.create_table('staff_session',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('staff_id', sa.Integer(), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('pending', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['staff_id'], ['staff_member.id'], name=op.f('fk_staff_session_staff_id_staff_member'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_staff_session'))
    )
    with op.batch_alter_table('staff_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_staff_session_staff_id'), ['staff_id'], unique=False)
    op.execute("DELETE FROM web_session WHERE role = 'staff'")
    with op.batch_alter_table('web_session', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_web_session_staff_id_staff_member'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_web_session_staff_id'))
        batch_op.alter_column('physician_id', existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column('pending')
        batch_op.drop_column('staff_id')
        batch_op.drop_column('role')
