"""The root of the project's exception hierarchy.

Each subpackage derives its own errors from these, so that callers can tell a
temporary failure (retry later, answer 4xx) from a permanent one (refuse, 5xx)
without knowing which library raised it.
"""


class MyhugError(Exception):
    """Base class of every error the gateway raises on purpose.

    The message is English, for logs, the CLI and the API. Errors that a person
    meets on a French page (the staff desk, the webmail) also carry `french`,
    the same in the UI's language; `in_french` falls back to the message.
    """

    def __init__(self, message: str = "", *, french: str | None = None) -> None:
        super().__init__(message)
        self.french = french

    @property
    def in_french(self) -> str:
        """What a French page shows."""
        return self.french or str(self)


class TemporaryFailure(MyhugError):
    """Something that may succeed if tried again later (storage, network)."""


class PermanentFailure(MyhugError):
    """Something that will fail again with the same input."""


class ConfigError(MyhugError):
    """A configuration value is missing or invalid; the message names the key."""
