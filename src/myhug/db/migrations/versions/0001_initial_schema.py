"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 13:23:57.281972
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_event',
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('document_id', sa.String(length=200), nullable=True),
    sa.Column('submission_id', sa.String(length=20), nullable=True),
    sa.Column('delivery_id', sa.String(length=20), nullable=True),
    sa.Column('physician_gln', sa.String(length=13), nullable=True),
    sa.Column('outcome', sa.String(length=10), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_audit_event'))
    )
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_event_delivery_id'), ['delivery_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_event_document_id'), ['document_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_event_event'), ['event'], unique=False)

    op.create_table('audit_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_head'))
    )
    # The chain's genesis: appends lock this row, so it must exist before the first event.
    op.execute(sa.text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :h)").bindparams(h="0" * 64))
    op.create_table('dpi_client',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('username', sa.String(length=100), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('api_token_hash', sa.String(length=64), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dpi_client')),
    sa.UniqueConstraint('api_token_hash', name=op.f('uq_dpi_client_api_token_hash')),
    sa.UniqueConstraint('name', name=op.f('uq_dpi_client_name')),
    sa.UniqueConstraint('username', name=op.f('uq_dpi_client_username'))
    )
    op.create_table('physician',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('gln', sa.String(length=13), nullable=False),
    sa.Column('given_name', sa.String(length=200), nullable=False),
    sa.Column('family_name', sa.String(length=200), nullable=False),
    sa.Column('channel', sa.String(length=10), nullable=False),
    sa.Column('hin_address', sa.String(length=320), nullable=True),
    sa.Column('login', sa.String(length=64), nullable=True),
    sa.Column('mobile', sa.String(length=20), nullable=True),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('password_hash', sa.String(length=200), nullable=True),
    sa.Column('password_must_change', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('notification_mode', sa.String(length=10), nullable=False),
    sa.Column('preferences', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("channel IN ('hin', 'hosted')", name=op.f('ck_physician_channel')),
    sa.CheckConstraint("notification_mode IN ('none', 'each', 'digest')", name=op.f('ck_physician_notification_mode')),
    sa.CheckConstraint("status IN ('registered', 'activated', 'suspended')", name=op.f('ck_physician_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_physician')),
    sa.UniqueConstraint('gln', name=op.f('uq_physician_gln')),
    sa.UniqueConstraint('hin_address', name=op.f('uq_physician_hin_address')),
    sa.UniqueConstraint('login', name=op.f('uq_physician_login'))
    )
    op.create_table('sealed_blob',
    sa.Column('id', sa.String(length=20), nullable=False),
    sa.Column('master_key_id', sa.Integer(), nullable=False),
    sa.Column('wrapped_key', sa.LargeBinary(), nullable=True),
    sa.Column('nonce', sa.LargeBinary(), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=True),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('shredded_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sealed_blob'))
    )
    op.create_table('consent',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_ref', sa.String(length=64), nullable=False),
    sa.Column('physician_id', sa.Integer(), nullable=False),
    sa.Column('designated', sa.Boolean(), nullable=False),
    sa.Column('electronic_sending_authorized', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['physician_id'], ['physician.id'], name=op.f('fk_consent_physician_id_physician'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consent')),
    sa.UniqueConstraint('patient_ref', 'physician_id', name=op.f('uq_consent_patient_ref_physician_id'))
    )
    with op.batch_alter_table('consent', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_consent_patient_ref'), ['patient_ref'], unique=False)

    op.create_table('consent_history',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_ref', sa.String(length=64), nullable=False),
    sa.Column('physician_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=10), nullable=False),
    sa.Column('designated', sa.Boolean(), nullable=False),
    sa.Column('electronic_sending_authorized', sa.Boolean(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('by', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['physician_id'], ['physician.id'], name=op.f('fk_consent_history_physician_id_physician'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consent_history'))
    )
    with op.batch_alter_table('consent_history', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_consent_history_patient_ref'), ['patient_ref'], unique=False)

    op.create_table('physician_specialty',
    sa.Column('physician_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=10), nullable=False),
    sa.ForeignKeyConstraint(['physician_id'], ['physician.id'], name=op.f('fk_physician_specialty_physician_id_physician'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('physician_id', 'code', name=op.f('pk_physician_specialty'))
    )
    op.create_table('submission',
    sa.Column('id', sa.String(length=20), nullable=False),
    sa.Column('dpi_client_id', sa.Integer(), nullable=False),
    sa.Column('envelope_sender', sa.String(length=320), nullable=False),
    sa.Column('document_id', sa.String(length=200), nullable=False),
    sa.Column('document_type', sa.String(length=64), nullable=True),
    sa.Column('patient_ref', sa.String(length=64), nullable=False),
    sa.Column('metadata_blob_id', sa.String(length=20), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['dpi_client_id'], ['dpi_client.id'], name=op.f('fk_submission_dpi_client_id_dpi_client')),
    sa.ForeignKeyConstraint(['metadata_blob_id'], ['sealed_blob.id'], name=op.f('fk_submission_metadata_blob_id_sealed_blob')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_submission'))
    )
    with op.batch_alter_table('submission', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_submission_document_id'), ['document_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_submission_patient_ref'), ['patient_ref'], unique=False)

    op.create_table('delivery',
    sa.Column('id', sa.String(length=20), nullable=False),
    sa.Column('submission_id', sa.String(length=20), nullable=False),
    sa.Column('document_id', sa.String(length=200), nullable=False),
    sa.Column('physician_id', sa.Integer(), nullable=False),
    sa.Column('recipient_address', sa.String(length=320), nullable=False),
    sa.Column('route', sa.String(length=10), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_owner', sa.String(length=100), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('queued', 'deferred', 'held', 'deposited', 'relayed', 'delivered', 'read', 'failed', 'expired', 'retracted')", name=op.f('ck_delivery_state')),
    sa.ForeignKeyConstraint(['physician_id'], ['physician.id'], name=op.f('fk_delivery_physician_id_physician')),
    sa.ForeignKeyConstraint(['submission_id'], ['submission.id'], name=op.f('fk_delivery_submission_id_submission')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery')),
    sa.UniqueConstraint('document_id', 'physician_id', name=op.f('uq_delivery_document_id_physician_id'))
    )
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_pending', ['state', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_delivery_submission_id'), ['submission_id'], unique=False)

    op.create_table('submission_document',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('submission_id', sa.String(length=20), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('content_type', sa.String(length=200), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('blob_id', sa.String(length=20), nullable=False),
    sa.ForeignKeyConstraint(['blob_id'], ['sealed_blob.id'], name=op.f('fk_submission_document_blob_id_sealed_blob')),
    sa.ForeignKeyConstraint(['submission_id'], ['submission.id'], name=op.f('fk_submission_document_submission_id_submission'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_submission_document'))
    )
    op.create_table('mailbox_item',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('physician_id', sa.Integer(), nullable=False),
    sa.Column('delivery_id', sa.String(length=20), nullable=False),
    sa.Column('submission_id', sa.String(length=20), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('deposited_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('read_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('notified_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("state IN ('available', 'retracted', 'expired')", name=op.f('ck_mailbox_item_state')),
    sa.ForeignKeyConstraint(['delivery_id'], ['delivery.id'], name=op.f('fk_mailbox_item_delivery_id_delivery')),
    sa.ForeignKeyConstraint(['physician_id'], ['physician.id'], name=op.f('fk_mailbox_item_physician_id_physician')),
    sa.ForeignKeyConstraint(['submission_id'], ['submission.id'], name=op.f('fk_mailbox_item_submission_id_submission')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mailbox_item')),
    sa.UniqueConstraint('delivery_id', name=op.f('uq_mailbox_item_delivery_id'))
    )
    with op.batch_alter_table('mailbox_item', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mailbox_item_physician_id'), ['physician_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('mailbox_item', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mailbox_item_physician_id'))

    op.drop_table('mailbox_item')
    op.drop_table('submission_document')
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_delivery_submission_id'))
        batch_op.drop_index('ix_delivery_pending')

    op.drop_table('delivery')
    with op.batch_alter_table('submission', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_submission_patient_ref'))
        batch_op.drop_index(batch_op.f('ix_submission_document_id'))

    op.drop_table('submission')
    op.drop_table('physician_specialty')
    with op.batch_alter_table('consent_history', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_consent_history_patient_ref'))

    op.drop_table('consent_history')
    with op.batch_alter_table('consent', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_consent_patient_ref'))

    op.drop_table('consent')
    op.drop_table('sealed_blob')
    op.drop_table('physician')
    op.drop_table('dpi_client')
    op.drop_table('audit_head')
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_event_event'))
        batch_op.drop_index(batch_op.f('ix_audit_event_document_id'))
        batch_op.drop_index(batch_op.f('ix_audit_event_delivery_id'))

    op.drop_table('audit_event')
