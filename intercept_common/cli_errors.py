"""Known failures of every `intercept-rl` command as one line with the remedy (the dispatcher prints it, exit 1).

`one_line(exc)` returns the line for a failure a user can fix (engine unreachable, port in use, disk full, Docker
down, an agent not installed, a bad config file), or None for anything else: an unexpected error is a bug and keeps
its traceback. Classes from upper layers are recognised by name, so this module imports nothing of ours.
"""

from __future__ import annotations

import errno

# Exceptions whose message is already the one line (with its remedy) the user needs.
SELF_EXPLAINING = ("ConfigFileError", "SandboxUnavailableError", "AgentUnavailableError", "EngineUnavailableError",
                   "PreflightError", "TaskLoadError", "EngineDiedError", "WeightTransferError", "VllmWeightSyncError")


def squash(text: str) -> str:
    """Collapse a multi-line message (a YAML error with its caret, an engine log tail) into one line."""
    return " ".join(str(text).split())


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def one_line(exc: BaseException) -> str | None:
    for error in _chain(exc):
        name = type(error).__name__
        if name in SELF_EXPLAINING:
            return squash(str(error))
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
        if name in ("ConnectionError", "ConnectTimeout", "NewConnectionError", "MaxRetryError"):
            return (f"cannot reach the engine ({squash(str(error))[:200]}): is it running? Start one with "
                    "`intercept-rl engine --model embedded`, or leave --engine-url / --vllm-url unset to start the "
                    "local engine")
    return None
