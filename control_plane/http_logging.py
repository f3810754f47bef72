"""aiohttp's own logging, tamed for a public gate."""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError


class MalformedHttpIsNotAnError(logging.Filter):
    """aiohttp answers a malformed HTTP message (a header flood, a broken request line) with 400 itself, then logs it
    at ERROR with a traceback. On a public gate that lets any client write tracebacks into our logs at will: such
    records go down to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError) and record.levelno >= logging.ERROR:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def install_malformed_http_filter() -> None:
    """Once per process: aiohttp.server's malformed-request records at DEBUG."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedHttpIsNotAnError) for f in server_log.filters):
        server_log.addFilter(MalformedHttpIsNotAnError())
