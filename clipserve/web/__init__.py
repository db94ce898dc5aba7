"""The web page (``GET /``) and the JavaScript client (``/static/clipserve.js``), served
from the static files beside this module.

Nothing here touches the model or the engine: the page is a client like any other and
talks to the server through ``clipserve.js``. The HTTP app mounts ``web_routes``; with
``--no-ui`` the page and its assets go, and only the client module stays at its stable
path, for JavaScript developers. Everything here is public (no token needed): the page
asks for the token itself and sends it only in headers or the WebSocket's first frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/static/"
#: the page's own open paths (``/static/...`` is open by prefix)
OPEN_PATHS = frozenset({"/", "/ui/server.json"})
#: what stays served with the page switched off: the JavaScript client
CLIENT_FILES = ("clipserve.js", "clipserve.d.ts", "clipserve/")
#: the page loads only its own files and talks only to its own origin
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".ts": "application/typescript; charset=utf-8",
    ".svg": "image/svg+xml",
}
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def web_routes(facts: Mapping[str, Any], *, page: bool = True) -> list[BaseRoute]:
    """``/static`` (the client module always; the page's assets with ``page``), and with
    ``page`` also ``GET /`` and ``GET /ui/server.json`` (``facts``: what the page must know
    before it has a token: whether one is needed, which protocols are served)."""
    routes: list[BaseRoute] = []
    if page:
        routes += [
            Route("/", _index, methods=["GET"]),
            Route("/ui/server.json", _facts_route(dict(facts)), methods=["GET"]),
        ]
    routes.append(Mount("/static", app=_StaticFiles(directory=STATIC_DIR, client_only=not page)))
    return routes


async def _index(request: Request) -> Response:
    headers = {**_HEADERS, "Content-Security-Policy": PAGE_POLICY, "Referrer-Policy": "no-referrer"}
    return FileResponse(
        STATIC_DIR / "index.html", media_type=_MEDIA_TYPES[".html"], headers=headers
    )


def _facts_route(facts: dict[str, Any]) -> Any:
    async def route(request: Request) -> Response:
        return JSONResponse(facts, headers={"Cache-Control": "no-store"})

    return route


class _StaticFiles(StaticFiles):
    """Stable media types (``.js`` must be JavaScript for module scripts whatever the OS's
    MIME table says), revalidation on every load, and the client-only mode."""

    def __init__(self, *, directory: Path, client_only: bool) -> None:
        super().__init__(directory=directory)
        self.client_only = client_only

    async def get_response(self, path: str, scope: Scope) -> Response:
        relative = path.replace("\\", "/")
        if self.client_only and not any(
            relative == name or (name.endswith("/") and relative.startswith(name))
            for name in CLIENT_FILES
        ):
            raise HTTPException(status_code=404)
        return await super().get_response(path, scope)

    def file_response(
        self, full_path: Any, stat_result: Any, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        suffix = Path(str(full_path)).suffix
        if suffix in _MEDIA_TYPES and response.status_code == 200:
            response.headers["content-type"] = _MEDIA_TYPES[suffix]
        response.headers.update(_HEADERS)
        return response
