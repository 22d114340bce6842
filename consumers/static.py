"""The browser agent's files, served by the cache node under /agent/.

- /agent/foresight-agent.js: the agent module (WebSocket, Cache Storage, feedback);
- /agent/foresight-sw.js: the Service Worker, with ``Service-Worker-Allowed: /`` so that a
  page may register it for the whole origin (scope "/") although it lives under /agent/;
- /agent/demo.html: the demo page (``?client=CLIENT_ID&token=TOKEN``).

The files live in agents/browser/; they are sent as they are, with no build step.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

BROWSER_DIR = Path(__file__).resolve().parents[1] / "agents" / "browser"
JAVASCRIPT = "text/javascript; charset=utf-8"

# route name -> (path served, file, extra headers)
_FILES: dict[str, tuple[str, str, dict[str, str]]] = {
    "agent-module": ("/agent/foresight-agent.js", "foresight-agent.js", {}),
    "agent-service-worker": (
        "/agent/foresight-sw.js",
        "foresight-sw.js",
        {"Service-Worker-Allowed": "/"},
    ),
    "agent-demo": (
        "/agent/demo.html",
        "demo.html",
        # The page's URL carries the token: never pass it on as a referrer.
        {"Content-Type": "text/html; charset=utf-8", "Referrer-Policy": "no-referrer"},
    ),
}


def _handler(file: Path, headers: dict[str, str]) -> Handler:
    fixed = {
        "Content-Type": JAVASCRIPT,
        # Revalidate every time, so a new agent or worker reaches browsers at once.
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        **headers,
    }

    async def serve(_request: web.Request) -> web.StreamResponse:
        return web.FileResponse(file, headers=fixed)

    return serve


def add_agent_routes(app: web.Application) -> None:
    """Serve the browser agent, its Service Worker and the demo page under /agent/."""
    for name, (path, filename, headers) in _FILES.items():
        app.router.add_get(path, _handler(BROWSER_DIR / filename, headers), name=name)
