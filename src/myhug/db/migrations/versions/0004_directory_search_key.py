"""directory search key

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 14:05:09.103993
"""

import re
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('physician', schema=None) as batch_op:
        batch_op.add_column(sa.Column('search_name', sa.String(length=420), nullable=False, server_default=""))
        batch_op.create_index(batch_op.f('ix_physician_search_name'), ['search_name'], unique=False)
    # Existing physicians get their folded names now (the folding is code, not SQL).
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT id, given_name, family_name FROM physician")).all()
    for physician_id, given_name, family_name in rows:
        connection.execute(sa.text("UPDATE physician SET search_name = :key WHERE id = :id"),
                           {"key": search_key(given_name or "", family_name or ""), "id": physician_id})



# Frozen copies of `myhug.directory.search` as of this revision: replaying history must not
# depend on today's code.
def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    plain = plain.replace("ß", "ss").replace("ae", "a").replace("oe", "o").replace("ue", "u")
    return re.sub(r"[^a-z0-9]+", " ", plain).strip()


def search_key(given_name: str, family_name: str) -> str:
    return f" {_fold(family_name)} {_fold(given_name)} ".replace("  ", " ")


def downgrade() -> None:
    with op.batch_alter_table('physician', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_physician_search_name'))
        batch_op.drop_column('search_name')

