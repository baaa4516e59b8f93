"""``tether-manage``: operator commands against the plugin's database.

tether-manage --config-file plugin.ini db upgrade [--revision REV]
tether-manage --config-file plugin.ini db current
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from oslo_config import cfg

from tether.cmd import daemon
from tether.plugin.db import migration, session

PROG = "tether-manage"


def _add_commands(subparsers: object) -> None:
    db = subparsers.add_parser("db", help="Manage the database schema.")  # type: ignore[attr-defined]
    db_actions = db.add_subparsers(dest="action", required=True)
    upgrade = db_actions.add_parser("upgrade", help="Upgrade the schema (to the newest by default).")
    upgrade.add_argument("--revision", default="head", help="Revision to upgrade to.")
    db_actions.add_parser("current", help="Print the schema revision and whether it is the newest.")


COMMAND = cfg.SubCommandOpt("command", title="commands", handler=_add_commands)


def _register(conf: cfg.ConfigOpts) -> None:
    conf.register_cli_opt(COMMAND)
    conf.register_opts(session.OPTS, group=session.GROUP)


def main(argv: Sequence[str] | None = None) -> None:
    conf = daemon.configure(argv, PROG, [_register])
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


if __name__ == "__main__":
    main()
