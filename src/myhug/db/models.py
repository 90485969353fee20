"""Imports every model module so that `Base.metadata` is complete (Alembic, drift test)."""

from myhug.audit import models as audit_models
from myhug.crypto import models as crypto_models
from myhug.directory import models as directory_models
from myhug.gateway import models as gateway_models
from myhug.mailbox import models as mailbox_models
from myhug.staffdesk import models as staffdesk_models
from myhug.webmail import models as webmail_models

__all__ = ["audit_models", "crypto_models", "directory_models", "gateway_models", "mailbox_models", "staffdesk_models", "webmail_models"]
