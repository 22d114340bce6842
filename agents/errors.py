"""The errors the agent SDK raises: a refused token, no node reachable, unknown or corrupt content.

All derive from :class:`AgentError`, so a caller that only wants to log and go on catches that.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of the SDK's errors."""


class AgentAuthError(AgentError):
    """The token was refused (close 4001/4003/4004, HTTP 401/403): retrying it cannot help."""


class AgentConnectionError(AgentError):
    """No node welcomed the agent: unreachable, closed early, or too many redirects."""


class ContentNotFound(AgentError, LookupError):
    """The node does not know the content (HTTP 404)."""


class ContentCorrupt(AgentError):
    """The node's answer does not match its own digest or headers."""
