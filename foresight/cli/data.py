"""Temporary."""
import click

@click.group("topics")
def topics_group() -> None:
    """Kafka topics."""

@click.group("db")
def db_group() -> None:
    """Cassandra."""

@click.group("schemas")
def schemas_group() -> None:
    """schemas."""

@click.command("produce")
def produce_command() -> None:
    """produce."""
