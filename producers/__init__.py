"""The producers: what turns visitors' requests into interaction events on Kafka.

``collector`` takes batches of JSON events over HTTP (``foresight collector``), ``accesslog``
and ``logline`` read web servers' access logs as sessions, ``datasets`` reads session-click
files, and ``publisher`` writes validated records to Kafka keyed by client, never silently lost.
"""
