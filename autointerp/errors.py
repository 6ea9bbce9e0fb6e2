"""Errors that the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user: a config key, a path, a stale cache.

    The message is one line that says what is wrong and how to fix it.
    """


class ConfigError(UserError):
    """A config value is missing, unknown, of the wrong type or out of range."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)
