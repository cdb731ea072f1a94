"""The `sqlarbiter` command line: the top layer, which assembles the commands of every other package."""

from cli.main import main

__all__ = ["main"]
