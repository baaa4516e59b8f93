"""``tether-manage``: operator commands against the plugin's database and the broker.

tether-manage --config-file plugin.ini db upgrade [--revision REV]
tether-manage --config-file plugin.ini db current
tether-manage --config-file plugin.ini dead-letters list [--limit N] [-f table|json]
tether-manage --config-file plugin.ini dead-letters requeue [--id MESSAGE_ID ...] [--limit N]
tether-manage --config-file plugin.ini dead-letters purge --yes
tether-manage --config-file plugin.ini token create --project P --role member [--name NAME]
tether-manage --config-file plugin.ini token list
tether-manage --config-file plugin.ini token revoke --name NAME

Exit codes: 0 done; 1 something could not be done (the database is behind,
the broker is unreachable, a dead letter was left in place); 2 bad usage or
configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from oslo_config import cfg

from tether.cmd import daemon, dead_letters, status
from tether.common import transport
from tether.common.exceptions import ConfigError, TetherError
from tether.plugin.agents import registry
from tether.plugin.api import auth
from tether.plugin.db import migration, session

PROG = "tether-manage"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def _add_commands(subparsers: object) -> None:
    db = subparsers.add_parser("db", help="Manage the database schema.")  # type: ignore[attr-defined]
    db_actions = db.add_subparsers(dest="action", required=True)
    upgrade = db_actions.add_parser("upgrade", help="Upgrade the schema (to the newest by default).")
    upgrade.add_argument("--revision", default="head", help="Revision to upgrade to.")
    db_actions.add_parser("current", help="Print the schema revision and whether it is the newest.")

    subparsers.add_parser(  # type: ignore[attr-defined]
        "status", help="What an operator checks first: schema, agents, backlog, outbox, recent failures."
    )

    letters = subparsers.add_parser(  # type: ignore[attr-defined]
        "dead-letters",
        help=f"Inspect, requeue or purge {transport.DEAD_LETTER_QUEUE}, where messages that could not "
        "be handled wait for an operator. Needs [DEFAULT] transport_url.",
    )
    letter_actions = letters.add_subparsers(dest="action", required=True)
    show = letter_actions.add_parser("list", help="Show dead letters without removing them.")
    show.add_argument(
        "--limit", type=_positive_int, default=50, metavar="N", help="Show at most this many (default: 50)."
    )
    show.add_argument(
        "-f",
        "--format",
        dest="output_format",
        choices=dead_letters.FORMATS,
        default="table",
        help="A table for people (default) or one JSON object per line for scripts.",
    )
    requeue = letter_actions.add_parser(
        "requeue",
        help="Publish dead letters again to the exchange and routing key they came from, and remove "
        "them from the dead-letter queue once the broker confirms.",
    )
    requeue.add_argument(
        "--id",
        dest="ids",
        action="append",
        default=[],
        metavar="MESSAGE_ID",
        help="Requeue only the messages with this id; repeat for several (default: all).",
    )
    requeue.add_argument(
        "--limit", type=_positive_int, default=None, metavar="N", help="Requeue at most this many."
    )
    purge = letter_actions.add_parser("purge", help="Delete every dead letter for good.")
    purge.add_argument("--yes", action="store_true", help="Confirm that they are to be deleted.")

    tokens = subparsers.add_parser(  # type: ignore[attr-defined]
        "token",
        help="Manage the API tokens of [api] token_file (auth_strategy = token); "
        "send the plugin SIGHUP to apply.",
    )
    token_actions = tokens.add_subparsers(dest="action", required=True)
    create = token_actions.add_parser(
        "create", help="Create a token; it is printed once, only its SHA-256 digest is stored."
    )
    create.add_argument("--project", required=True, help="The project the token acts in.")
    create.add_argument(
        "--role",
        dest="roles",
        action="append",
        required=True,
        choices=auth.ROLES,
        help="A role of the token; repeat for several.",
    )
    create.add_argument("--name", dest="token_name", help="A name to list and revoke the token by.")
    token_actions.add_parser("list", help="List the tokens' names, projects and roles.")
    revoke = token_actions.add_parser("revoke", help="Remove the tokens of this name.")
    revoke.add_argument("--name", dest="token_name", required=True)


COMMAND = cfg.SubCommandOpt("command", title="commands", handler=_add_commands)


def _register(conf: cfg.ConfigOpts) -> None:
    conf.register_cli_opt(COMMAND)
    conf.register_opts(session.OPTS, group=session.GROUP)
    conf.register_opts(registry.OPTS, group="plugin")
    conf.register_opts(auth.OPTS, group=auth.GROUP)


def main(argv: Sequence[str] | None = None) -> None:
    conf = daemon.configure(argv, PROG, [_register])
    if conf.command.name == "dead-letters":
        sys.exit(_dead_letters(conf))
    if conf.command.name == "token":
        sys.exit(_tokens(conf))
    if conf.command.name == "status":
        sys.exit(status.status_command(conf))
    _db(conf)


def _db(conf: cfg.ConfigOpts) -> None:
    engine = session.make_engine(conf)
    url = engine.url.render_as_string(hide_password=True)
    if conf.command.action == "upgrade":
        migration.upgrade(engine, conf.command.revision)
        print(f"{url}: schema at revision {migration.current(engine)}")
    elif conf.command.action == "current":
        current, head = migration.current(engine), migration.head()
        state = "newest" if current == head else f"behind {head}; run db upgrade"
        print(f"{url}: schema at revision {current} ({state})")
        if current != head:
            sys.exit(1)


def _tokens(conf: cfg.ConfigOpts) -> int:
    if not conf.api.token_file:
        daemon.fail(PROG, ConfigError(reason="[api] token_file is not set; name the file the plugin reads"))
    path = Path(conf.api.token_file).expanduser()
    command = conf.command
    try:
        if command.action == "create":
            token = auth.add_token(path, command.project, command.roles, command.token_name)
            print(token)
            print(
                f"# stored as a SHA-256 digest in {path}; this is the only time the token is shown. "
                "Send the plugins SIGHUP to accept it.",
                file=sys.stderr,
            )
        elif command.action == "list":
            for name, project, roles in auth.list_tokens(path):
                print(f"{name or '-':<24} {project:<24} {','.join(roles)}")
        else:
            removed = auth.revoke_token(path, command.token_name)
            print(f"{removed} token(s) named {command.token_name} removed; send the plugins SIGHUP to apply.")
            return 0 if removed else 1
    except ConfigError as exc:
        daemon.fail(PROG, exc)
    return 0


def _dead_letters(conf: cfg.ConfigOpts) -> int:
    broker = _broker(conf)
    command = conf.command
    try:
        if command.action == "list":
            return dead_letters.list_command(broker, command.limit, command.output_format)
        if command.action == "requeue":
            return dead_letters.requeue_command(broker, command.ids, command.limit, stop=daemon.STOP)
        return dead_letters.purge_command(broker, command.yes)
    except ConfigError as exc:
        daemon.fail(PROG, exc)
    except TetherError as exc:
        print(f"{PROG}: {exc.msg}", file=sys.stderr)
    return 1


def _broker(conf: cfg.ConfigOpts) -> transport.Broker:
    files = ", ".join(conf.config_file) or "none given"
    # A default is no answer: it names a broker on localhost, not the plugin's.
    location = conf.get_location("transport_url")
    defaulted = location is not None and location.location == cfg.Locations.opt_default
    if not conf.transport_url or defaulted:
        daemon.fail(
            PROG,
            ConfigError(
                reason="[DEFAULT] transport_url is required by dead-letters but not set (config files: "
                f"{files}); set it to the broker URL the plugin and agents use."
            ),
        )
    try:
        broker = transport.Broker(conf)
    except TetherError as exc:
        daemon.fail(PROG, exc)
    if broker.url.in_memory:
        daemon.fail(
            PROG,
            ConfigError(
                reason="[DEFAULT] transport_url is memory://, whose queues live inside one process; "
                f"dead-letters needs the RabbitMQ URL the plugin and agents use (config files: {files})."
            ),
        )
    return broker


if __name__ == "__main__":
    main()
