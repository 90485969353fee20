"""The root of the project's exception hierarchy.

Each subpackage derives its own errors from these, so that callers can tell a
temporary failure (retry later, answer 4xx) from a permanent one (refuse, 5xx)
without knowing which library raised it.
"""


class MyhugError(Exception):
    """Base class of every error the gateway raises on purpose."""


class TemporaryFailure(MyhugError):
    """Something that may succeed if tried again later (storage, network)."""


class PermanentFailure(MyhugError):
    """Something that will fail again with the same input."""


class ConfigError(MyhugError):
    """A configuration value is missing or invalid; the message names the key."""
