"""Provision the Kafka and Cassandra jars from Maven Central, once, into a cache folder.

The poms live in the repository (foresight/services/poms); the jars are resolved by Maven's
dependency plugin into a folder outside it, keyed by the pom's content, so that a changed pom
resolves again and an unchanged one never does.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

POM_DIR = Path(__file__).with_name("poms")
# Pinned so that Maven needs no metadata look-up to find the plugin.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"


class ServiceError(RuntimeError):
    """A local service could not be provisioned, started or stopped; the message is one line."""


def require_tool(tool: str) -> str:
    """Path of ``tool`` on PATH, or a one-line ServiceError saying how to get it."""
    path = shutil.which(tool)
    if path is None:
        hint = "install OpenJDK 17" if tool == "java" else "install Apache Maven"
        raise ServiceError(
            f"`{tool}` is not on PATH: {hint} (apt-get install -y "
            f"{'openjdk-17-jre-headless' if tool == 'java' else 'maven'})"
        )
    return path


def lib_dir(cache_dir: Path, name: str) -> Path:
    """Where the jars of the pom ``poms/<name>.xml`` live once resolved."""
    pom = POM_DIR / f"{name}.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    return cache_dir / "lib" / f"{name}-{digest}"


def ensure_libs(
    cache_dir: Path,
    name: str,
    on_line: Callable[[str], None] = lambda _line: None,
) -> bool:
    """Resolve ``poms/<name>.xml`` into its lib folder unless it is already there.

    ``on_line`` sees every line Maven prints, so a caller can show progress. Returns whether
    Maven ran (False: the jars were already cached).
    """
    target = lib_dir(cache_dir, name)
    if (target / ".complete").exists():
        return False
    mvn = require_tool("mvn")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    command = [
        mvn,
        "-B",
        "-f",
        str(POM_DIR / f"{name}.xml"),
        DEPENDENCY_PLUGIN,
        "-DincludeScope=runtime",
        f"-DoutputDirectory={partial}",
    ]
    tail: list[str] = []
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=partial,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail = [*tail[-9:], line]
            on_line(line)
    if proc.returncode != 0:
        errors = [t for t in tail if "ERROR" in t] or tail
        raise ServiceError(f"Maven could not resolve {name}: {errors[0] if errors else '?'}")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    (target / ".complete").write_text("resolved by foresight services up\n")
    return True
