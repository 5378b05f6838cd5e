"""httpx's transport for the workers' clients, with one upstream race mended.

When the server closes a socket while httpcore is still setting the connection up,
anyio (4.x) raises `AttributeError: 'NoneType' object has no attribute
'getpeername'` from the stream's `extra_attributes`, not an httpx error. Callers
handle `httpx.HTTPError` (unreachable: retry later), so a server killed at that
moment crashed the handler instead (found by `make chaos`, scenario c: the API
killed while a stage fetched a run's keys). `Transport` raises it as the
`httpx.ConnectError` it is.
"""

from __future__ import annotations

import httpx

_RACE = "getpeername"


class Transport(httpx.AsyncHTTPTransport):
    """`httpx.AsyncHTTPTransport` whose mid-connect closes are `ConnectError`s."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except AttributeError as exc:
            if _RACE not in str(exc):
                raise
            raise httpx.ConnectError(
                f"the connection closed while it was set up ({exc})", request=request
            ) from exc
