"""Alembic environment. The connection is passed in by `myhug.schema`; no alembic.ini needed."""

from alembic import context

import myhug.schema  # noqa: F401  (fills Base.metadata)
from myhug.db.base import Base

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
