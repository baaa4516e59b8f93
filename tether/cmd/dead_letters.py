"""``tether-manage dead-letters``: look at, requeue and purge ``tether.dead-letter``.

The reading and the acting are :mod:`tether.common.dead_letter_queue`'s
(the plugin's ``/v1/dead-letters`` uses them too); this module prints for
people.

The ``*_command`` functions print and return the exit code: 0 when
everything asked was done, 1 when something could not be done. What stops a
command raises instead: :class:`ConfigError` for a configuration the broker
refuses, :class:`TetherError` (:class:`TransportError` for the broker) for
the rest.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence

from tether.common import transport
from tether.common.dead_letter_queue import QUEUE, peek, purge, requeue
from tether.common.dead_letter_reader import DeadLetter, printable
from tether.common.exceptions import TetherError

FORMATS = ("table", "json")

_REASON_WIDTH = 60
#: Characters of a body shown in the table.
PREVIEW_WIDTH = 40


# -- the commands as tether-manage runs them ------------------------------


def list_command(broker: transport.Broker, limit: int, fmt: str = "table") -> int:
    total, letters = peek(broker, limit)
    summary = sys.stdout
    if fmt == "json":
        for position, letter in enumerate(letters, 1):
            print(json.dumps({"position": position, **letter.as_dict()}))
        # So that standard output stays pure JSON lines for jq and friends.
        summary = sys.stderr
    elif letters:
        print(format_table(letters))
        for position, letter in enumerate(letters, 1):
            if letter.unreadable:
                print(printable(f"#{position} {_name(letter)} is unreadable: {letter.unreadable}"))
    if not total:
        print(f"{QUEUE} is empty.", file=summary)
    elif len(letters) < total:
        print(f"{total} message(s) in {QUEUE}; listed the first {len(letters)} (see --limit).", file=summary)
    else:
        print(f"{total} message(s) in {QUEUE}.", file=summary)
    return 0


def requeue_command(
    broker: transport.Broker,
    ids: Sequence[str] = (),
    limit: int | None = None,
    stop: threading.Event | None = None,
) -> int:
    report = requeue(broker, ids, limit, stop)
    print(f"requeued {len(report.requeued)} message(s) from {QUEUE}.")
    for letter in report.requeued:
        print(f"  {_name(letter)} → {_origin_text(letter.origin)}")
    if report.left:
        print(f"left {len(report.left)} message(s) in {QUEUE}:")
        for letter, why in report.left:
            print(f"  {_name(letter)}: {why}")
    if report.missing:
        print(f"no message in {QUEUE} has the id: {', '.join(report.missing)}")
    if report.stopped:
        print(f"stopped before the end ({report.stopped}); run the command again for the rest.")
    return 1 if report.left or report.missing or report.stopped else 0


def purge_command(broker: transport.Broker, yes: bool) -> int:
    """:raises TetherError: without ``yes``, before touching the broker."""
    if not yes:
        raise TetherError(
            f"purge deletes every message in {QUEUE} for good; add --yes to do it "
            "(see them first with `dead-letters list`)."
        )
    print(f"purged {purge(broker)} message(s) from {QUEUE}.")
    return 0


def format_table(letters: Sequence[DeadLetter]) -> str:
    header = ("#", "MESSAGE ID", "REASON", "EXCHANGE → ROUTING KEY", "TASK ID", "SIZE", "BODY")
    rows = [header] + [
        (
            str(position),
            printable(_name(letter)),
            _clip(printable(" ".join(letter.reason.split())), _REASON_WIDTH),
            printable(_origin_text(letter.origin)),
            printable(letter.task_id or "-"),
            str(letter.size),
            _clip(letter.preview, PREVIEW_WIDTH) or "-",
        )
        for position, letter in enumerate(letters, 1)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def _name(letter: DeadLetter) -> str:
    return letter.message_id or "(no id)"


def _origin_text(origin: tuple[str, str] | None) -> str:
    if origin is None:
        return "unknown"
    exchange, routing_key = origin
    return f"{exchange or '(default)'} → {routing_key}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
