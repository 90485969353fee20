"""HIN route: recipient keys, receipts outbox, message ids

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 13:49:58.431512
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('receipt',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('audit_seq', sa.Integer(), nullable=False),
    sa.Column('submission_id', sa.String(length=20), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_receipt')),
    sa.UniqueConstraint('audit_seq', name=op.f('uq_receipt_audit_seq'))
    )
    with op.batch_alter_table('receipt', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_receipt_submission_id'), ['submission_id'], unique=False)

    op.create_table('recipient_key',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('physician_id', sa.Integer(), nullable=True),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['physician_id'], ['physician.id'], name=op.f('fk_recipient_key_physician_id_physician'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recipient_key')),
    sa.UniqueConstraint('fingerprint', name=op.f('uq_recipient_key_fingerprint'))
    )
    with op.batch_alter_table('recipient_key', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recipient_key_address'), ['address'], unique=False)
        batch_op.create_index(batch_op.f('ix_recipient_key_physician_id'), ['physician_id'], unique=False)

    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.add_column(sa.Column('message_id', sa.String(length=200), nullable=True))
        batch_op.create_index(batch_op.f('ix_delivery_message_id'), ['message_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_delivery_message_id'))
        batch_op.drop_column('message_id')

    with op.batch_alter_table('recipient_key', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recipient_key_physician_id'))
        batch_op.drop_index(batch_op.f('ix_recipient_key_address'))

    op.drop_table('recipient_key')
    with op.batch_alter_table('receipt', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_receipt_submission_id'))

    op.drop_table('receipt')
