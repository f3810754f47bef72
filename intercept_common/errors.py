"""The root of every failure a user can fix: its message is the one line, with the remedy, that the CLI prints.

`UserError` is the base of every self-explaining error of every package (a config file or value the commands reject,
Docker down, an agent not installed, the engine unreachable or dead, ...); `intercept_common.cli_errors` recognises
them by type. `ConfigError` is the one for configuration: a value a config dataclass rejects, a key or section no
config has. It is also a `ValueError`, what a dataclass's validation raises by convention.
"""

from __future__ import annotations


class UserError(Exception):
    """A failure the user can fix; `str(error)` is one line that says what to change."""


class ConfigError(UserError, ValueError):
    """A configuration value, flag, key or section the commands reject (raised before anything starts)."""
