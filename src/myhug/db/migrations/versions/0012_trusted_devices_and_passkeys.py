"""trusted devices (the SMS step skipped on a chosen browser) and passkeys (WebAuthn)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'trusted_device',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('physician_id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('label', sa.String(length=100), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_reason', sa.String(length=30), nullable=True),
        sa.ForeignKeyConstraint(['physician_id'], ['physician.id'], name='fk_trusted_device_physician_id_physician',
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name='pk_trusted_device'),
        sa.UniqueConstraint('token_hash', name='uq_trusted_device_token_hash'),
    )
    op.create_index('ix_trusted_device_physician_id', 'trusted_device', ['physician_id'])
    op.create_table(
        'passkey',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('physician_id', sa.Integer(), nullable=False),
        sa.Column('credential_id', sa.LargeBinary(length=1024), nullable=False),
        sa.Column('public_key', sa.LargeBinary(), nullable=False),
        sa.Column('sign_count', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['physician_id'], ['physician.id'], name='fk_passkey_physician_id_physician',
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name='pk_passkey'),
        sa.UniqueConstraint('credential_id', name='uq_passkey_credential_id'),
    )
    op.create_index('ix_passkey_physician_id', 'passkey', ['physician_id'])
    op.create_table(
        'passkey_challenge',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('challenge', sa.LargeBinary(length=64), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_passkey_challenge'),
    )


def downgrade() -> None:
    op.drop_table('passkey_challenge')
    op.drop_index('ix_passkey_physician_id', table_name='passkey')
    op.drop_table('passkey')
    op.drop_index('ix_trusted_device_physician_id', table_name='trusted_device')
    op.drop_table('trusted_device')
