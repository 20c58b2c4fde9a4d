"""Prefect on the console: only what the user needs.

Prefect's console handler prints every flow and task state and, for an error raised inside a
flow, the whole traceback twice (task, then flow); the error reaches the CLI anyway, which
prints it as one line (a user error) or with its traceback (a bug). So by default only
Prefect's warnings without a traceback pass to the console; its API handler (what the UI
shows) keeps everything.
"""

from __future__ import annotations

import logging

# what Prefect logs when a signal stops a flow run ("Crash detected! Execution was aborted by a
# termination signal."): the CLI says it in its own line
SIGNAL_CRASH = ("aborted by a termination signal", "aborted by an interrupt signal")


class PrefectConsoleFilter(logging.Filter):
    """Lets a Prefect record reach the console only when it is a warning or worse, carries no
    traceback and is not about an error or a stop the CLI prints itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.exc_info:
            return False
        message = record.getMessage()
        return "EeltError" not in message and not any(s in message for s in SIGNAL_CRASH)


def quiet_prefect_console() -> None:
    """Put :class:`PrefectConsoleFilter` on Prefect's console handlers (after Prefect has set
    up its logging, i.e. after ``import prefect``)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in ("prefect", "uvicorn"))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and not any(
                isinstance(f, PrefectConsoleFilter) for f in handler.filters
            ):
                handler.addFilter(PrefectConsoleFilter())
