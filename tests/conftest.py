from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the plugin database of the functional tests' deployments: SQLite files (the "
        "default) or a private PostgreSQL cluster started for the session",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A test that starts no plugin, or that checks only what the broker
    # keeps or how processes come and go, ran the same on the SQLite pass.
    if config.getoption("database") == "sqlite":
        return
    kept = [
        item
        for item in items
        if not any(
            item.get_closest_marker(m) for m in ("no_database", "broker_only", "supervision", "allinone")
        )
    ]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


def pytest_report_header(config: pytest.Config) -> str:
    return f"tether functional database: {config.getoption('database')}"
