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


def pytest_report_header(config: pytest.Config) -> str:
    return f"tether functional database: {config.getoption('database')}"
