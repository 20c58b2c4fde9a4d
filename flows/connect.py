"""Prefect's API, checked before a run starts: the configured server, or the ephemeral one.

Without ``PREFECT_API_URL`` (and no `eelt server` running), Prefect starts an ephemeral server
(a uvicorn process) the first time a flow needs it, and raises a long traceback if it does not
answer within ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``. Starting it here, before the
flow, turns that into one :class:`PrefectUnavailable` line the command line can act on; the flow
then finds the server running.
"""

from __future__ import annotations

import os

from eelt.errors import EeltError
from eelt.server import healthy

STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
API_TIMEOUT_S = 10.0  # how long a configured API may take to answer its health check


class PrefectUnavailable(EeltError):
    """Prefect's API does not answer: the message names the cause."""


def startup_timeout_s() -> float:
    """Seconds the ephemeral server is given to answer (``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``)."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    return float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())


def connect(timeout_s: float | None = None) -> str:
    """The URL of a Prefect API that answers: ``PREFECT_API_URL``'s, or the ephemeral server's,
    started here and given ``timeout_s`` seconds (default: Prefect's startup timeout setting).
    Raises :class:`PrefectUnavailable` otherwise (an ephemeral server that did not come up is
    stopped)."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        if not healthy(url.rstrip("/"), timeout_s=API_TIMEOUT_S):
            raise PrefectUnavailable(f"the Prefect API at {url} (PREFECT_API_URL) does not answer")
        return url
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_ENABLED

    if not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        raise PrefectUnavailable(
            "no Prefect API: PREFECT_API_URL is unset and the ephemeral server is off"
        )
    timeout_s = startup_timeout_s() if timeout_s is None else timeout_s
    server = SubprocessASGIServer()
    try:
        server.start(timeout=timeout_s)
    except Exception:
        server.stop()
        raise PrefectUnavailable(
            f"Prefect's ephemeral server did not answer within {timeout_s:g} s "
            f"({STARTUP_TIMEOUT_ENV}); a busy machine?"
        ) from None
    return server.api_url
