"""The sample ini files in etc/tether/ are generated, never edited by hand."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("role", ["plugin", "agent", "allinone"])
def test_sample_config_matches_the_option_definitions(role: str, tmp_path: pathlib.Path) -> None:
    generated = tmp_path / f"{role}.ini"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "oslo_config.generator",
            "--config-file",
            str(ROOT / "etc" / "oslo-config-generator" / f"{role}.conf"),
            "--output-file",
            str(generated),
        ],
        check=True,
        cwd=ROOT,
    )
    committed = (ROOT / "etc" / "tether" / f"{role}.ini").read_text()
    assert generated.read_text() == committed, (
        f"etc/tether/{role}.ini is stale: run `make genconfig` and commit the result"
    )
