"""Foresight's agents: what runs next to the person and answers their requests.

The Python SDK holds the WebSocket to the client's owner node (docs/push-protocol.md), keeps
pushed content in a byte-bounded local cache (``agents.cache``), serves ``get`` from it when it
can and reports hits, misses and unused prefetches back.
"""
