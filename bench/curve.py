"""Latency against offered load: p50 and p99 from accept to finished while an
open loop offers each system a share of its own measured end-to-end rate.

An open loop sends each request at its time whatever the answers do, so the
latency a system shows at a rate is what a population of clients would see;
a closed loop (wrk) slows down with the system and hides it. Each point is a
few seconds at one rate, then a wait until the system has finished it all.
"""

from __future__ import annotations

import csv
import datetime
import pathlib
from collections.abc import Callable
from typing import Any, Protocol

from bench import load
from bench.deployment import latencies

#: shares of the system's end-to-end rate, one point each
FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)
FIELDS = ("system", "fraction", "offered_per_s", "sent_per_s", "tasks", "tasks_per_s", "p50_ms", "p99_ms")


class Loaded(Protocol):
    """A deployment the curve can load and read: tether's or a peer's."""

    url: str

    def tasks(self) -> list[tuple[datetime.datetime, datetime.datetime | None, str]]: ...

    def wait_settled(self, timeout: float, progress: Any = None) -> None: ...


def run(
    system: Loaded,
    name: str,
    rate: float,
    seconds: float,
    body: dict[str, Any],
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """One point per share of ``rate``, on the running ``system``."""
    points = []
    for fraction in FRACTIONS:
        offered = max(1.0, rate * fraction)
        say(f"curve {name}: {offered:.0f} requests/s ({fraction:.0%}) for {seconds:.0f} s")
        since = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        sent = load.open_loop(system.url, offered, seconds, body)
        system.wait_settled(300)
        measured = latencies([t for t in system.tasks() if t[0] >= since])
        points.append(
            {
                "system": name,
                "fraction": fraction,
                "offered_per_s": offered,
                "sent_per_s": sent["per_s"],
                **{k: measured[k] for k in ("tasks", "tasks_per_s", "p50_ms", "p99_ms")},
            }
        )
    return points


def write(points: list[dict[str, Any]], directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """``curve.csv`` and ``curve.png``: p50 and p99 against offered load, a line per system."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "curve.csv"
    with data.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        for point in points:
            writer.writerow({k: round(v, 2) if isinstance(v, float) else v for k, v in point.items()})
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4.2), dpi=120)
    systems = list(dict.fromkeys(p["system"] for p in points))
    colours = pyplot.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, system in zip(colours, systems, strict=False):
        mine = [p for p in points if p["system"] == system]
        offered = [p["offered_per_s"] for p in mine]
        axes.plot(offered, [p["p99_ms"] for p in mine], "o-", color=colour, label=f"{system} p99")
        axes.plot(offered, [p["p50_ms"] for p in mine], "s:", color=colour, label=f"{system} p50")
    axes.set_xlabel("offered load, requests/s (open loop)")
    axes.set_ylabel("accept → finished, ms")
    axes.set_yscale("log")
    axes.legend(fontsize=8)
    axes.set_title("latency against offered load")
    figure.tight_layout()
    picture = directory / "curve.png"
    figure.savefig(picture)
    pyplot.close(figure)
    return data, picture
