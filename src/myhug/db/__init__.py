"""Database: engine, the one place that owns transactions, models base and migrations."""

from myhug.db.base import Base
from myhug.db.session import Database

__all__ = ["Base", "Database"]
