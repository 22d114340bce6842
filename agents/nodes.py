"""The nodes an agent knows: the one it was given, every other it heard of, and the client's owner.

Any live node answers an agent (a node that does not own the client redirects it), so the agent
keeps every node it heard of and tries them in turn when the owner is gone. Pure: the
connection and the HTTP fetch move ``owner`` as redirects and 421 answers tell them.

>>> nodes = NodeDirectory("http://a:8710/", ["http://b:8710"])
>>> nodes.moved_to("http://c:8710")
>>> nodes.owner, nodes.known()
('http://c:8710', ['http://a:8710', 'http://b:8710', 'http://c:8710'])
>>> ws_url("http://c:8710"), http_base("wss://d/x/v1/agents/ws")
('ws://c:8710/v1/agents/ws', 'https://d/x')
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from schemas.protocol import WS_PATH


def ws_url(base: str) -> str:
    """The agents' WebSocket URL of the node at http(s) ``base``."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + WS_PATH, "", ""))


def http_base(url: str) -> str:
    """The http(s) base of the node whose agents' WebSocket URL is ``url`` (as in a redirect)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.removesuffix(WS_PATH), "", ""))


class NodeDirectory:
    """Base http(s) URLs, without a trailing slash, of the nodes heard of, in order."""

    def __init__(self, bootstrap: str, others: Iterable[str] = ()) -> None:
        #: The node the agent was given: any node can point it to its owner.
        self.bootstrap = bootstrap.rstrip("/")
        #: The node believed to own the client (or being tried).
        self.owner = self.bootstrap
        self._known = dict.fromkeys([self.bootstrap, *(n.rstrip("/") for n in others)])

    def known(self) -> list[str]:
        """Every node heard of, the bootstrap node first."""
        return list(self._known)

    def owner_first(self) -> list[str]:
        """The owner, then every other node heard of."""
        return list(dict.fromkeys((self.owner, *self._known)))

    def moved_to(self, url: str) -> None:
        """A node named ``url`` the owner: remember it and use it from now on."""
        self.owner = url
        self._known[url] = None

    def next_owner(self) -> None:
        """Take the node after the owner as the owner (when the owner cannot be reached)."""
        known = self.known()
        if self.owner in known and len(known) > 1:
            self.owner = known[(known.index(self.owner) + 1) % len(known)]
