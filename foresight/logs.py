"""One log line per event: a JSON object (FORESIGHT_LOG_FORMAT=json) or a readable text line.

The long-running processes (collector, origin, cache node, worker) configure logging once at
start with :func:`configure`; Faust's worker sets logging up itself, so it is handed
:func:`dict_config` instead and writes through the same formatter. Either way a record becomes
exactly one physical line: newlines inside a message or a traceback are escaped, and an
exception travels as the ``traceback`` field of its line.

Fields of a JSON line: ``ts`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``msg``,
then every ``extra=`` field of the call, then ``exc_type`` and ``traceback`` when the record
carries an exception.

Secrets stay out: pydantic's SecretStr prints as stars wherever it is formatted (so a Settings
object does too), and an extra field whose name mentions a secret, token, password or
authorization is replaced by stars, at any depth of a dict or list.

Examples
--------
>>> import io
>>> stream = io.StringIO()
>>> configure("json", stream=stream)
>>> logging.getLogger("demo").warning("dead-lettered %s", "interactions", extra={"offset": 7})
>>> line = json.loads(stream.getvalue())
>>> line["level"], line["logger"], line["msg"], line["offset"]
('WARNING', 'demo', 'dead-lettered interactions', 7)
"""

from __future__ import annotations

import json
import logging
import logging.config
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import PurePath
from typing import IO, Any

from pydantic import SecretBytes, SecretStr

from foresight.settings import LogFormat

REDACTED = "**********"
_SENSITIVE = ("secret", "token", "password", "authorization")
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
# Loggers that say too much at INFO for a long-running process, or too little at their CLI
# level (the CLI silences the Kafka and Cassandra clients for one-shot commands).
_SERVICE_LEVELS = {"aiohttp.access": "WARNING", "librdkafka": "WARNING", "cassandra": "WARNING"}


def _sensitive(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SENSITIVE)


def redact(key: str, value: Any) -> Any:
    """``value`` with secrets replaced by stars: all of it when ``key`` names a secret, else
    every SecretStr and every sensitive key inside its dicts and lists."""
    if _sensitive(key) and value is not None:
        return REDACTED
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): redact(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(key, v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    """What ``json.dumps`` cannot write itself, as a string (a Settings object prints its
    secrets as stars)."""
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, PurePath):
        return str(value)
    return str(value)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a call passed with ``extra=``, secrets redacted."""
    return {
        key: redact(key, value)
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_")
    }


def timestamp(record: logging.LogRecord) -> str:
    """The record's time in UTC, ISO 8601 with milliseconds and a Z."""
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def one_line(text: str) -> str:
    """``text`` on one physical line: every line break written as the two characters \\n."""
    return "\\n".join(text.splitlines())


class LineFormatter(logging.Formatter):
    """What every format writes of a record: the fields of a JSON line, in order."""

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        line: dict[str, Any] = {
            "ts": timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            line[f"extra_{key}" if key in line else key] = value
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
            line["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["traceback"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return line


class JsonFormatter(LineFormatter):
    """One JSON object per record, ASCII only, so that no character can break the line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.fields(record), default=_jsonable, ensure_ascii=True)


class TextFormatter(LineFormatter):
    """``TS LEVEL logger: message key=value ...``: the fields of a JSON line, readable."""

    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields(record)
        head = f"{fields.pop('ts')} {fields.pop('level')} {fields.pop('logger')}: "
        head += fields.pop("msg")
        tail = "".join(f" {key}={self._value(value)}" for key, value in fields.items())
        return one_line(head + tail)

    @staticmethod
    def _value(value: Any) -> str:
        if isinstance(value, str) and value and not any(c in value for c in ' "=\\'):
            return value
        return json.dumps(value, default=_jsonable)


def dict_config(
    log_format: LogFormat, level: int | str = logging.INFO, stream: IO[str] | None = None
) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` configuration: one handler on the root logger, to
    ``stream`` (standard error by default), in ``log_format``. Faust's worker takes it as its
    ``logging_config``."""
    number = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"foresight": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {
            "foresight": {
                "class": "logging.StreamHandler",
                "formatter": "foresight",
                "stream": stream if stream is not None else "ext://sys.stderr",
            }
        },
        "root": {"level": number, "handlers": ["foresight"]},
        # With DEBUG asked for, every logger says everything (NOTSET also undoes a level an
        # earlier configuration, such as the CLI's, gave these loggers).
        "loggers": {
            name: {"level": "NOTSET" if number <= logging.DEBUG else lvl}
            for name, lvl in _SERVICE_LEVELS.items()
        },
    }


def configure(
    log_format: LogFormat, level: int | str = logging.INFO, *, stream: IO[str] | None = None
) -> None:
    """Replace the root logger's handlers with one writing ``log_format`` lines."""
    logging.config.dictConfig(dict_config(log_format, level, stream))
