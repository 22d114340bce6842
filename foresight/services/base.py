"""What every local service has: an address, a folder, a command line and a health check.

A service is the single set's one node (``node`` 0, on 127.0.0.1, in ``STATE_DIR/<kind>``) or
node 1, 2 or 3 of the replicated set (on REPLICATED_HOSTS, in
``STATE_DIR/replicated/<kind>-<node>``). The addresses keep the two sets apart, so both use
the same ports and run side by side.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import ClassVar

from foresight.services.provision import lib_dir, require_tool
from foresight.settings import REPLICATED_HOSTS, Settings

TEMPLATES = Path(__file__).with_name("templates")
SINGLE_HOST = "127.0.0.1"
#: Node numbers of the replicated set, one per address of REPLICATED_HOSTS.
REPLICATED_NODES = tuple(range(1, len(REPLICATED_HOSTS) + 1))


def render(template: str, target: Path, **values: object) -> None:
    """Write a template with its ``${name}`` placeholders filled in."""
    text = (TEMPLATES / template).read_text()
    if values:  # a template without values (log4j2's own ${sys:...} lookups) is copied as is
        text = Template(text).substitute({k: str(v) for k, v in values.items()})
    target.write_text(text)


def port_open(port: int, host: str = SINGLE_HOST, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def node_host(node: int) -> str:
    """The address of a node: 127.0.0.1 for the single set (0), else its replicated one."""
    return SINGLE_HOST if node == 0 else REPLICATED_HOSTS[node - 1]


@dataclass(frozen=True)
class ServiceSpec(ABC):
    """One local service: where it lives, how it starts, and how to tell it answers."""

    settings: Settings
    node: int = 0  # 0: the single set; 1..3: a node of the replicated set

    kind: ClassVar[str]  # the pom its jars come from, and the name of the single set's one
    main_class: ClassVar[str]
    log_name: ClassVar[str]

    def __post_init__(self) -> None:
        if self.node != 0 and self.node not in REPLICATED_NODES:
            raise ValueError(f"{self.kind}: no node {self.node} (0, or one of {REPLICATED_NODES})")

    @property
    def replicated(self) -> bool:
        return self.node != 0

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.node}" if self.replicated else self.kind

    @property
    def host(self) -> str:
        """The loopback address it binds and clients reach it on."""
        return node_host(self.node)

    @property
    def home(self) -> Path:
        if self.replicated:
            return self.settings.state_dir / "replicated" / self.name
        return self.settings.state_dir / self.kind

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def log_file(self) -> Path:
        """The service's own log, the one to read when it misbehaves."""
        return self.log_dir / self.log_name

    @property
    def console_file(self) -> Path:
        """stdout and stderr of the JVM (early crashes land here before logging starts)."""
        return self.log_dir / "console.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "pid.json"

    @property
    def lib(self) -> Path:
        return lib_dir(self.settings.cache_dir, self.kind)

    @property
    @abstractmethod
    def port(self) -> int:
        """The port clients use."""

    @property
    @abstractmethod
    def ports(self) -> list[int]:
        """Every port the service binds on its address (a taken one stops the start)."""

    @abstractmethod
    def prepare(self) -> None:
        """Write the config files and do any one-time set-up of the data folder."""

    @abstractmethod
    def command(self) -> list[str]:
        """The JVM command line."""

    @abstractmethod
    def healthy(self) -> bool:
        """A real request answered (not just an open port)."""

    def _java(self) -> str:
        return require_tool("java")
