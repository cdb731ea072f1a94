"""The options shared by the commands (`cli.commands`), so that one thing has one name and one meaning on every
command: the databases and the configuration (`plan`, `check`, `databases`, `serve`, `models list`, `route`,
`eval`), and `--data` for a dataset folder (`eval`, `select fit`, `databases load-spider`).

    --config FILE        the configuration (default: $SQLARBITER_CONFIG, else the built-in one)
    --data DIR_OR_FILE   a database file or a folder of them; repeatable
    --db ID              the database to use (commands that act on one database)

Which databases a command sees: the demo database, then the configuration's `databases`, then
$SQLARBITER_DATABASES (files/folders separated by the OS path separator), then every `--data`, in that order
(a later entry with an id already registered replaces it). The service (`serve`) sees the same set.

Only `argparse` is imported at module level: building the CLI parser must stay cheap."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from planner.config import Config
    from sqlbox.databases import DatabaseRegistry

CONFIG_HELP = ("TOML/YAML configuration file (default: $SQLARBITER_CONFIG, else the built-in one: embedded model, "
               "demo database); see sqlarbiter.example.toml")
DATA_HELP = ("a database file (.sqlite/.db/.sqlite3/.duckdb; its id is the file name) or a folder of them (Spider/BIRD "
             "layout, e.g. ../shared/data/spider or its database/ folder, or a flat folder); repeatable; added to the "
             "config's `databases` and $SQLARBITER_DATABASES (the demo database is always there)")
DB_HELP = "database id (see `sqlarbiter databases`), e.g. demo"
DATASET_HELP = ("dataset directory: questions plus their databases (Spider/BIRD layout, e.g. ../shared/data/spider; "
                "default: {default})")


def add_config_option(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--config", metavar="FILE", default=None, help=CONFIG_HELP)


def add_database_options(p: argparse.ArgumentParser, *, db: Literal["required", "optional"] | None = "required",
                         config: bool = True) -> argparse._ArgumentGroup:
    """Add `--db ID` (when `db` is given), `--data DIR_OR_FILE` (repeatable) and `--config FILE` (when `config`)
    in one "databases and configuration" group. Read them back with `load_cli_config` / `cli_registry`."""
    g = p.add_argument_group("databases and configuration")
    if db is not None:
        g.add_argument("--db", metavar="ID", required=db == "required", default=None, help=DB_HELP)
    g.add_argument("--data", metavar="DIR_OR_FILE", action="append", default=None, help=DATA_HELP)
    if config:
        add_config_option(g)
    return g


def add_dataset_option(p: argparse.ArgumentParser | argparse._ArgumentGroup, default: object) -> None:
    """`--data DIR` where a command reads a dataset folder (questions + databases: `eval`, `select fit`,
    `databases load-spider`), not databases to register."""
    p.add_argument("--data", metavar="DIR", default=None, help=DATASET_HELP.format(default=default))


def load_cli_config(args: argparse.Namespace, *, registries: bool = True) -> Config:
    """The configuration named by `--config` (or $SQLARBITER_CONFIG, or built-in) with every `--data` appended
    to its `databases`. Raises planner.config.ConfigError (a ValueError) for a bad file. `registries=False`:
    router and backend names unchecked (their registries not imported: a command that only reads databases)."""
    from planner.config import load_config

    cfg = load_config(getattr(args, "config", None), registries=registries)
    data = [str(d) for d in (getattr(args, "data", None) or [])]
    if data:
        cfg = cfg.model_copy(update={"databases": [*cfg.databases, *data]})
    return cfg


def cli_registry(args: argparse.Namespace, config: Config | None = None) -> DatabaseRegistry:
    """The databases a command sees (see the module docstring). Raises ConfigError (ValueError) for a bad
    config, FileNotFoundError / NotADirectoryError (OSError) or ValueError for a bad `--data` entry."""
    from sqlbox.databases import registry_for

    cfg = config if config is not None else load_cli_config(args)
    return registry_for(cfg.databases, privileged=cfg.privileged_databases)


def config_or_report(args: argparse.Namespace) -> Config | None:
    """`load_cli_config`, or None after printing why the configuration cannot be read (exit status 2)."""
    from planner.config import ConfigError

    try:
        return load_cli_config(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def registry_or_report(args: argparse.Namespace, *, registries: bool = True) -> DatabaseRegistry | None:
    """`cli_registry`, or None after printing why the databases cannot be registered (exit status 2).
    `registries=False`: see `load_cli_config`."""
    try:
        return cli_registry(args, None if registries else load_cli_config(args, registries=False))
    except (OSError, ValueError) as e:  # a bad --data entry or config (ConfigError is a ValueError)
        from sqlbox.servers.targets import redact

        print(f"error: cannot register the databases: {redact(str(e))}", file=sys.stderr)
        return None
