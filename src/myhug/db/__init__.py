"""Database, the ground floor: engine, the one place that owns transactions, the models' base, leases.

The migrations live here too; the registry of every model is `myhug.schema`.
"""

from myhug.db.base import Base
from myhug.db.session import Database

__all__ = ["Base", "Database"]
