"""What a driver's call answers besides done: an operation the device is
still working on (:class:`InProgress`), or one to run step by step
(:class:`Steps`). Both are exported by :mod:`tether.drivers.base`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from tether.common.states import MAX_STEP_NAME, MAX_STEPS


@dataclasses.dataclass(frozen=True)
class InProgress:
    """What ``create``, ``update``, ``delete`` or ``poll`` return when the
    device is still working (a firmware push, a VM boot): the agent frees the
    worker, and calls :meth:`Driver.poll` with this object after
    ``poll_after`` seconds, until ``poll`` returns None (done) or raises.

    :ivar progress: shown on the task meanwhile ("image copied, 40 %").
    :ivar handle: the driver's own note of what to check (a device job id).
    """

    poll_after: float = 5.0
    progress: str | None = None
    handle: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of an operation, as :class:`Steps` lists them.

    :ivar name: what a person reads in the task's steps ("allocate the VIP
        port"); unique within the operation, and the same on every attempt,
        because a later attempt skips the steps recorded done by name.
    :ivar apply: makes the step's change and returns None once the device
        holds it (a step cannot answer ``InProgress``). Idempotent: when an
        agent dies during it, the next attempt applies it again. When it
        raises, it leaves nothing behind: only the steps done before it are
        undone.
    :ivar undo: takes the step's change back after a later step failed for
        good; idempotent too. None when there is nothing to take back.
    """

    name: str
    apply: Callable[[], object]
    undo: Callable[[], object] | None = None


@dataclasses.dataclass(frozen=True)
class Steps:
    """What ``create``, ``update`` or ``delete`` return to have the agent run
    an operation step by step.

    The agent runs the steps in order and reports each to the plugin, which
    records it in the task before the next starts. A later attempt of the
    task (after its agent died, or a retryable failure) skips the steps
    recorded done and starts at the first one that is not. When a step fails
    for good, the steps done are undone in reverse order, each recorded, and
    the task fails naming the step and what was undone.
    """

    steps: tuple[Step, ...]

    def __init__(self, steps: Iterable[Step]) -> None:
        steps = tuple(steps)
        if not 0 < len(steps) <= MAX_STEPS:
            raise ValueError(f"an operation has 1 to {MAX_STEPS} steps, not {len(steps)}")
        names = [step.name for step in steps]
        for name in names:
            if (
                not isinstance(name, str)
                or not name.strip()
                or len(name) > MAX_STEP_NAME
                or any(ord(c) < 0x20 for c in name)
            ):
                raise ValueError(
                    f"a step's name is text of 1 to {MAX_STEP_NAME} characters without control "
                    f"characters, not {name!r}"
                )
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(
                f"step names must be unique within an operation; repeated: {', '.join(repeated)}"
            )
        object.__setattr__(self, "steps", steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)
