"""The (method, path template) pairs an app serves, read from its route table.

FastAPI 0.165 keeps included routers as `_IncludedRouter` entries in `app.routes`;
`fastapi.routing.iter_route_contexts` flattens them into the routes as served, with
their full paths.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts


def route_table(app: FastAPI) -> set[tuple[str, str]]:
    table = set()
    for route in iter_route_contexts(app.routes):
        path = route.path
        assert path is not None, f"a route without a path: {route!r}"
        for method in route.methods or ():
            table.add((method, path))
    return table
