"""Known failures of every `intercept-rl` command as one line with the remedy (the dispatcher prints it, exit 1).

`one_line(exc)` returns the line for a failure a user can fix, or None for anything else: an unexpected error is a bug
and keeps its traceback. It decides by type only: every self-explaining error of ours derives from
`intercept_common.errors.UserError` (its message is the line; `OneLineArgumentParser` makes argparse's refusals
such errors); the OS's errors (port in use, disk full, no write
access) and `requests`' connection errors (the engine unreachable) get their remedy here.
"""

from __future__ import annotations

import argparse
import errno

from intercept_common.errors import ConfigError, UserError


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse for the commands that do not parse dataclasses (inspect, doctor, space): a refused flag or value is a
    `ConfigError`, so it reads as one line like every other command's, not argparse's usage block and exit 2.
    Sub-command parsers inherit the class (argparse makes them with the parent's)."""

    def error(self, message: str):
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def squash(text: str) -> str:
    """Collapse a multi-line message (a YAML error with its caret, an engine log tail) into one line."""
    return " ".join(str(text).split())


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _connection_errors() -> tuple[type[BaseException], ...]:
    """`requests`' and urllib3's "cannot connect" types (imported here, lazily: not every command has them)."""
    types: list[type[BaseException]] = []
    try:
        from requests.exceptions import ConnectionError as RequestsConnectionError

        types.append(RequestsConnectionError)  # ConnectTimeout derives from it
    except ImportError:
        pass
    try:
        from urllib3.exceptions import MaxRetryError, NewConnectionError

        types += [MaxRetryError, NewConnectionError]
    except ImportError:
        pass
    return tuple(types)


def one_line(exc: BaseException) -> str | None:
    connection_errors = _connection_errors()
    for error in _chain(exc):
        if isinstance(error, UserError):
            return squash(str(error))
        if isinstance(error, connection_errors):
            return (f"cannot reach the engine ({squash(str(error))[:200]}): is it running? Start one with "
                    "`intercept-rl engine --model embedded`, or leave --engine-url / --vllm-url unset to start the "
                    "local engine")
        if isinstance(error, OSError):
            target = f" {error.filename}" if getattr(error, "filename", None) else ""
            if error.errno == errno.EADDRINUSE:
                return (f"the address is already in use ({squash(error.strerror or str(error))}): choose another "
                        "port (--port; for train's gate --gate-port), or stop the process that holds it")
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                return (f"no space left on the device writing{target}: free some space or choose another "
                        "--output-dir / --out")
            if error.errno in (errno.EACCES, errno.EROFS, errno.ENOTDIR, errno.EPERM) and target:
                return (f"cannot write{target} ({error.strerror}): choose another --output-dir / --out")
    return None
