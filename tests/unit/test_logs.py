"""Log lines: one per event, JSON that parses or readable text, extras kept, secrets never."""

from __future__ import annotations

import doctest
import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest
from pydantic import SecretStr, ValidationError

import foresight.logs
from foresight.logs import REDACTED, configure, dict_config
from foresight.settings import LogFormat, Settings

SECRET = "s" * 40  # long enough for an agent token secret
_TOUCHED = ("aiohttp.access", "librdkafka", "cassandra")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Each test configures the root logger; put it back as it was afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in _TOUCHED}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def lines_of(log_format: LogFormat, emit: Callable[[logging.Logger], None]) -> list[str]:
    """The lines ``emit`` writes through a root logger configured for ``log_format``."""
    stream = io.StringIO()
    configure(log_format, stream=stream)
    emit(logging.getLogger("foresight.test"))
    return stream.getvalue().splitlines()


def test_a_json_line_has_the_standard_fields_and_the_extras() -> None:
    [line] = lines_of(
        "json",
        lambda log: log.warning(
            "dead-lettered %s", "interactions", extra={"partition": 3, "offset": 41}
        ),
    )
    record = json.loads(line)
    assert record["level"] == "WARNING" and record["logger"] == "foresight.test"
    assert record["msg"] == "dead-lettered interactions"
    assert record["partition"] == 3 and record["offset"] == 41
    assert record["ts"].endswith("Z") and "T" in record["ts"]


def test_an_exception_is_one_json_line_with_its_traceback_as_a_field() -> None:
    def fail(log: logging.Logger) -> None:
        try:
            raise ValueError("bad record\non two lines")
        except ValueError:
            log.exception("engine failed on %s", "e-1", extra={"topic": "interactions"})

    [line] = lines_of("json", fail)
    record = json.loads(line)
    assert record["msg"] == "engine failed on e-1" and record["topic"] == "interactions"
    assert record["exc_type"] == "ValueError"
    assert record["traceback"].startswith("Traceback (most recent call last):")
    assert "bad record\non two lines" in record["traceback"]


def test_line_breaks_in_a_message_never_split_the_line() -> None:
    for log_format in ("json", "text"):
        lines = lines_of(log_format, lambda log: log.info("one\ntwo\r\nthree\u2028four"))
        assert len(lines) == 1, log_format
    [line] = lines_of("json", lambda log: log.info("one\ntwo\u2028three"))
    assert json.loads(line)["msg"] == "one\ntwo\u2028three"


def test_a_text_line_is_readable_and_keeps_extras_and_the_traceback() -> None:
    def fail(log: logging.Logger) -> None:
        try:
            raise KeyError("node-3")
        except KeyError:
            log.error("leave failed", exc_info=True, extra={"node": "node-3", "why": "a b"})

    [line] = lines_of("text", fail)
    assert ' ERROR foresight.test: leave failed node=node-3 why="a b"' in line
    assert 'exc_type=KeyError traceback="Traceback (most recent call last):\\n' in line


def test_secrets_never_reach_a_line() -> None:
    settings = Settings(
        agent_token_secrets=[SecretStr(SECRET)], origin_admin_token=SecretStr("admin-" + SECRET)
    )

    def leak(log: logging.Logger) -> None:
        log.info("settings %s", settings)
        log.info("repr %r", settings)
        log.info("extras", extra={"settings": settings, "key": SecretStr(SECRET)})
        log.info("environment", extra={"env": settings.as_environment()})
        log.info("nested", extra={"node": {"auth_token": "t-" + SECRET, "peers": ["a"]}})

    for log_format in ("json", "text"):
        lines = lines_of(log_format, leak)
        assert len(lines) == 5
        assert not any(SECRET in line for line in lines), log_format
    records = [json.loads(line) for line in lines_of("json", leak)]
    assert records[2]["key"] == REDACTED
    assert records[3]["env"]["FORESIGHT_AGENT_TOKEN_SECRETS"] == REDACTED
    assert records[3]["env"]["FORESIGHT_ORIGIN_ADMIN_TOKEN"] == REDACTED
    assert records[3]["env"]["FORESIGHT_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:9092"
    assert records[4]["node"] == {"auth_token": REDACTED, "peers": ["a"]}


def test_services_log_info_but_not_each_http_request() -> None:
    stream = io.StringIO()
    configure("json", logging.INFO, stream=stream)
    logging.getLogger("foresight.test").info("snapshot saved")
    logging.getLogger("aiohttp.access").info("GET /metrics 200")
    logging.getLogger("foresight.test").debug("detail")
    assert [json.loads(line)["msg"] for line in stream.getvalue().splitlines()] == [
        "snapshot saved"
    ]


def test_debug_shows_everything() -> None:
    stream = io.StringIO()
    configure("text", logging.DEBUG, stream=stream)
    logging.getLogger("aiohttp.access").info("GET /metrics 200")
    logging.getLogger("librdkafka").debug("connecting")
    assert len(stream.getvalue().splitlines()) == 2


def test_faust_worker_logging_uses_the_same_format() -> None:
    from mode.utils import logging as mode_logging

    stream = io.StringIO()
    level = mode_logging.setup_logging(
        loglevel="info", logging_config=dict_config("json", "info", stream)
    )
    assert level == logging.INFO
    logging.getLogger("faust.worker").info("[^Worker]: Ready")
    [line] = stream.getvalue().splitlines()
    assert json.loads(line)["logger"] == "faust.worker"


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="level"):
        dict_config("text", "chatty")


def test_the_format_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORESIGHT_LOG_FORMAT", raising=False)
    assert Settings().log_format == "text"
    monkeypatch.setenv("FORESIGHT_LOG_FORMAT", "json")
    assert Settings().log_format == "json"
    monkeypatch.setenv("FORESIGHT_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError):
        Settings()


def test_docstring_examples() -> None:
    assert doctest.testmod(foresight.logs).failed == 0
