"""docker/compose.yaml, checked by reading (no Docker engine here): two workers in one group,
two cache nodes with their own slots, ports and addresses, and only settings that exist."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumers.server import NodeConfig
from foresight.settings import Settings

DOCKER = Path(__file__).resolve().parents[2] / "docker"
PLACEHOLDER_SECRET = '["' + "x" * 32 + '"]'  # stands in for ${FORESIGHT_AGENT_TOKEN_SECRETS:?...}
INTERPOLATION = re.compile(r"^\$\{(?P<name>[A-Z_]+):\?[^}]+\}$")


def load() -> dict[str, Any]:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(compose, dict)
    return compose


SERVICES: dict[str, dict[str, Any]] = load()["services"]


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    assert isinstance(command, list), "commands are lists: no shell splitting surprises"
    return [str(part) for part in command]


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environments are mappings, so they can merge"
    return {str(k): str(v) for k, v in env.items()}


def settings_of(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a service's process would read: its environment and nothing else."""
    monkeypatch.chdir(DOCKER)  # no .env file there
    for name in [n for n in os.environ if n.startswith("FORESIGHT_")]:
        monkeypatch.delenv(name)
    for name, value in environment(service).items():
        monkeypatch.setenv(name, PLACEHOLDER_SECRET if INTERPOLATION.match(value) else value)
    return Settings()


def foresight_services(first_word: str) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in SERVICES.items()
        if command_of(service)[:1] == [first_word]
    }


def healthcheck_url(service: dict[str, Any]) -> str:
    test = " ".join(service["healthcheck"]["test"])
    found = re.search(r"http://[^'\"/]+(?::\d+)?/healthz", test)
    assert found, test
    return found.group(0)


WORKERS = foresight_services("worker")
NODES = foresight_services("cache-node")


def test_every_foresight_variable_is_a_setting() -> None:
    fields = set(Settings.model_fields)
    for name, service in SERVICES.items():
        for variable in environment(service):
            if variable.startswith("FORESIGHT_"):
                field = variable.removeprefix("FORESIGHT_").lower()
                assert field in fields, f"{name}: {variable} is not a Foresight setting"


@pytest.mark.parametrize("name", sorted(n for n in SERVICES if n not in ("kafka", "cassandra")))
def test_every_foresight_service_has_valid_settings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of(SERVICES[name], monkeypatch)
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.cassandra_hosts == ["cassandra"]


def test_the_token_secret_is_given_at_start_never_written_here() -> None:
    for name, service in NODES.items():
        value = environment(service)["FORESIGHT_AGENT_TOKEN_SECRETS"]
        assert INTERPOLATION.match(value), f"{name} must take the secret from the environment"
    for name, service in SERVICES.items():
        if name not in NODES:
            assert "FORESIGHT_AGENT_TOKEN_SECRETS" not in environment(service), name


def test_two_workers_in_one_group_each_with_its_own_id_and_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert len(WORKERS) == 2
    settings = [settings_of(service, monkeypatch) for service in WORKERS.values()]
    assert len({s.worker_group for s in settings}) == 1
    assert len({s.worker_id for s in settings}) == 2
    for service, s in zip(WORKERS.values(), settings, strict=True):
        port = s.worker_web_port + s.worker_id
        assert healthcheck_url(service) == f"http://127.0.0.1:{port}/healthz"


def test_two_cache_nodes_with_their_own_slot_port_and_reachable_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert len(NODES) == 2
    urls, slots = set(), set()
    for name, service in NODES.items():
        settings = settings_of(service, monkeypatch)
        command = command_of(service)
        node_id = int(option(command, "--node-id"))
        assert node_id < settings.prefetch_command_slots, f"{name} has no slot"
        host = option(command, "--host")
        # The address it binds is the one it advertises, so it must be this container's name.
        assert host == service["hostname"] == name
        port = int(option(command, "--port")) if "--port" in command else None
        config = NodeConfig(
            node_id=f"node-{node_id}",
            slot=node_id,
            host=host,
            port=port or settings.cache_node_base_port + node_id,
        )
        assert service["ports"] == [f"{config.port}:{config.port}"]
        assert healthcheck_url(service) == f"{config.url}/healthz"
        urls.add(config.url)
        slots.add(config.slot)
        allowed = settings.origin_allowed_hosts
        assert settings.origin_url_template.startswith("http://origin:") and "origin" in allowed
    assert len(urls) == len(slots) == 2


def test_long_running_services_have_healthchecks_and_start_in_order() -> None:
    one_shot = {"setup"}
    for name, service in SERVICES.items():
        if name not in one_shot:
            assert "healthcheck" in service, name
        for needed, condition in service.get("depends_on", {}).items():
            assert needed in SERVICES, f"{name} depends on a missing {needed}"
            wanted = condition["condition"]
            if needed in one_shot:
                assert wanted == "service_completed_successfully", (name, needed)
            else:
                assert wanted == "service_healthy", (name, needed)
    for name, service in {**WORKERS, **NODES, **foresight_services("origin")}.items():
        assert "setup" in service["depends_on"], f"{name} would start before its topics exist"


def test_the_image_holds_every_package() -> None:
    pyproject = tomllib.loads((DOCKER.parent / "pyproject.toml").read_text())
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    copied = set(re.findall(r"^COPY (\w+) ", (DOCKER / "Dockerfile").read_text(), re.MULTILINE))
    assert set(packages) <= copied
