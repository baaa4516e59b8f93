"""Checks of a service's resource types that need the database, at accept.

A resource type's schema judges one body alone. What depends on other
resources (an address and port no other resource may serve, an address
given out from a pool) is judged by an :class:`AcceptCheck`, which the plugin
calls inside the transaction that accepts the change: after the tree's lock,
with the resource written but the change's task not yet made, so a check may
refuse the change (raise :class:`~tether.common.exceptions.TetherError`,
usually ``Conflict`` or ``InvalidInput``; nothing of the change is kept) or
fill in an attribute (:meth:`Acceptance.assign`) that the answer, the task and
the driver then show.

A service publishes its checks in the entry-point namespace
``tether.accept_checks``, one class per resource type, named for the type::

    [options.entry_points]
    tether.accept_checks =
        volume = acme_storage.checks:VolumeCheck

Keys that one resource must hold alone are **reservations**
(:meth:`Acceptance.reserve`): the database's primary key decides between
concurrent accepts, in one group commit or on two plugin replicas, and a
resource's reservations are released when its row is deleted (after its
delete succeeded, or its create was cancelled). The load-balancing set's
checks are the example: :mod:`tether.plugin.lbaas`.

References between resources need no check of their own: declare them on the
type (``ResourceType.references``) and :mod:`tether.plugin.tasks.references` judges them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from oslo_config import cfg
from sqlalchemy import orm
from stevedore import extension

from tether.common.exceptions import ConfigError, Conflict
from tether.common.resource_types import Registry, ResourceType
from tether.plugin.db import reservations
from tether.plugin.db.models import ResourceRecord
from tether.plugin.tasks import references

LOG = logging.getLogger(__name__)

NAMESPACE = "tether.accept_checks"


@dataclasses.dataclass
class Acceptance:
    """One change being accepted, as a check sees it."""

    session: orm.Session
    rtype: ResourceType
    #: the resource as the change leaves it (a create's is written, with its id)
    resource: ResourceRecord
    #: the parent of a created child; None otherwise
    parent: ResourceRecord | None = None
    #: the attributes an update names, with their new values
    changes: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def assign(self, attribute: str, value: Any) -> None:
        """Give the resource's ``attribute`` a value (an address given out, say)."""
        self.resource.attributes = dict(self.resource.attributes) | {attribute: value}

    def reserve(self, key: str, conflict: str) -> None:
        """Hold ``key`` for the resource.

        :raises Conflict: with the message ``conflict`` when another resource holds it.
        """
        if not reservations.reserve(self.session, key, self.resource.id):
            raise Conflict(conflict)

    def try_reserve(self, key: str) -> bool:
        """Hold ``key`` for the resource if nobody does; whether it does now."""
        return reservations.reserve(self.session, key, self.resource.id)

    def holder(self, key: str) -> str | None:
        """The id of the resource holding ``key``, if any (of any project: show it to no one)."""
        return reservations.holder_of(self.session, key)

    def reserved(self, prefix: str) -> set[str]:
        """Every key held that starts with ``prefix``, by any resource."""
        return reservations.held(self.session, prefix)

    def release(self, keys: Iterable[str]) -> None:
        """Give up keys the resource holds (an update that moved it)."""
        reservations.release(self.session, keys)


class AcceptCheck:
    """The checks of one resource type. Every hook does nothing by default.

    :param conf: the plugin's options, with those of :meth:`list_opts`
        registered.
    """

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf

    @classmethod
    def list_opts(cls) -> list[tuple[str, list[cfg.Opt]]]:
        """Options the check reads, by group; in the plugin's sample config."""
        return []

    def checks_create_of_root(self, attributes: Mapping[str, Any]) -> bool:
        """Whether :meth:`create` must see this new root. A root whose check
        says no is written without it, by the plugin's fastest path (no
        savepoint, bulk inserts). Children are always checked."""
        return True

    def create(self, acceptance: Acceptance) -> None:
        """Judge a create; may :meth:`~Acceptance.assign` attributes and reserve keys."""

    def update(self, acceptance: Acceptance) -> None:
        """Judge an update (``acceptance.changes`` says what it changes)."""

    def delete(self, acceptance: Acceptance) -> None:
        """Judge a delete (its reservations are released once the resource is gone)."""


class AcceptChecks:
    """What :class:`~tether.plugin.tasks.changes.Changes` asks at accept: the
    references the types declare, then the checks installed, by type."""

    def __init__(self, registry: Registry, checks: Mapping[str, AcceptCheck] | None = None) -> None:
        self.registry = registry
        self._checks = dict(checks or {})

    @classmethod
    def load(cls, conf: cfg.ConfigOpts, registry: Registry) -> AcceptChecks:
        """Instantiate the checks of the installed types (their options
        registered by :func:`register_opts`)."""
        checks = {name: check(conf) for name, check in _classes().items() if name in registry}
        # Said at start: a package installed without its entry points checks nothing.
        LOG.info(
            "accept checks: %s",
            ", ".join(f"{n} ({type(c).__module__}.{type(c).__qualname__})" for n, c in sorted(checks.items()))
            or "none installed",
        )
        return cls(registry, checks)

    def get(self, type_name: str) -> AcceptCheck | None:
        return self._checks.get(type_name)

    def checks_root(self, rtype: ResourceType, attributes: Mapping[str, Any]) -> bool:
        """Whether a new root must be created in a transaction that checks it."""
        check = self._checks.get(rtype.name)
        return check is not None and check.checks_create_of_root(attributes)

    def create(
        self,
        session: orm.Session,
        rtype: ResourceType,
        resource: ResourceRecord,
        parent: ResourceRecord | None,
    ) -> None:
        """Judge a create, its resource added to ``session``."""
        references.check_named(session, self.registry, rtype, resource, resource.attributes)
        check = self._checks.get(rtype.name)
        if check is not None:
            session.flush()  # what it reserves names the resource's row
            check.create(Acceptance(session, rtype, resource, parent))

    def update(
        self, session: orm.Session, rtype: ResourceType, resource: ResourceRecord, changes: Mapping[str, Any]
    ) -> None:
        """Judge an update before ``resource`` takes ``changes``."""
        references.check_named(
            session, self.registry, rtype, resource, references.changed(rtype, resource.attributes, changes)
        )
        check = self._checks.get(rtype.name)
        if check is not None:
            check.update(Acceptance(session, rtype, resource, changes=changes))

    def delete(self, session: orm.Session, rtype: ResourceType, doomed: Sequence[ResourceRecord]) -> None:
        """Judge a delete of ``doomed[0]`` that removes ``doomed``."""
        references.check_unreferenced(session, self.registry, doomed)
        check = self._checks.get(rtype.name)
        if check is not None:
            check.delete(Acceptance(session, rtype, doomed[0]))


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """The options of every installed check, by group."""
    return [group for check in _classes().values() for group in check.list_opts()]


def register_opts(conf: cfg.ConfigOpts) -> None:
    for group, opts in list_opts():
        conf.register_opts(opts, group=group)


def _classes() -> dict[str, type[AcceptCheck]]:
    manager: extension.ExtensionManager[Any] = extension.ExtensionManager(
        NAMESPACE, invoke_on_load=False, on_load_failure_callback=_load_failed
    )
    found: dict[str, type[AcceptCheck]] = {}
    for ext in manager:
        if not (isinstance(ext.plugin, type) and issubclass(ext.plugin, AcceptCheck)):
            raise ConfigError(
                reason=f"entry point {ext.name!r} in {NAMESPACE} must name a subclass of "
                f"tether.plugin.tasks.accept_checks.AcceptCheck, found {ext.plugin!r}"
            )
        found[ext.name] = ext.plugin
    return found


def _load_failed(manager: Any, entrypoint: Any, exc: BaseException) -> None:
    raise ConfigError(reason=f"cannot load accept check {entrypoint}: {exc}") from exc
