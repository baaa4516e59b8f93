"""The driver API.

A driver translates the desired state of a resource into one vendor's device
configuration. The agent loads it through stevedore from the entry-point
namespace ``tether.drivers`` (the entry-point name is the provider name users
put in ``provider``) and calls it synchronously in a worker thread::

    [options.entry_points]
    tether.drivers =
        acme = acme_tether.driver:AcmeDriver

Contract
    * Every call carries the **full desired state** of the resource and of
      its whole tree, never a diff.
    * Calls are **idempotent**: applying the same desired state twice leaves
      the device as applying it once. A work message can be delivered again
      after an agent dies mid-call, so a driver will see repeats.
    * Calls return when the device has the state, or raise one of the
      exceptions below to say what went wrong.
    * Status flows back through the :class:`Callbacks` object, never through
      the database: agents hold no database credentials.

Exceptions (all :class:`DriverError`; each carries a message for the API
user and one for the operator's log)::

    DriverError                 failed; the task ends FAILED with the user message
    ├── DeviceUnreachable       transient: the framework retries with backoff
    ├── DeviceBusy              transient: the device is locked or overloaded; retried too
    ├── InvalidConfiguration    permanent: retrying cannot help
    └── NotSupported            the driver cannot do this operation or feature

Whatever else a driver raises fails the task as ``DriverBug``
(:mod:`tether.drivers.reporting`).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar, Literal

from oslo_config import cfg

from tether.common import resource_types
from tether.common.capabilities import Capabilities, Constraint
from tether.common.exceptions import TetherError, as_message
from tether.common.states import OperatingStatus
from tether.drivers.operations import InProgress as InProgress
from tether.drivers.operations import Step as Step
from tether.drivers.operations import Steps as Steps
from tether.drivers.peers import Peer as Peer
from tether.drivers.resource import Resource as Resource

Placement = Literal["shared", "host"]


class DriverError(TetherError):
    """A driver failed to apply a change.

    Raise it, or any subclass, however a vendor's code does: bare
    (``raise DeviceUnreachable``), with a message, with a message for the
    user and one for the operator, with octavia-lib's keyword names, or with
    the fields of the class's ``message`` template (``reason=...``, or a
    vendor subclass's own). Its class alone decides whether it is retried.

    :param user_message: what the API user sees in the task's error and the
        resource's ``last_error``; say what is wrong and what to do about it.
        When not given, the class's ``message`` template filled from the
        keyword arguments (a field not given reads "no detail given").
    :param operator_message: extra detail for the agent's log only (device
        responses, internal ids); defaults to the user message.
    :param user_fault_string: octavia-lib's name of ``user_message``, so a
        ported Octavia driver raises unchanged.
    :param operator_fault_string: octavia-lib's name of ``operator_message``.
    """

    message = "The driver failed: {reason}"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        user_message: object = None,
        operator_message: object = None,
        *,
        user_fault_string: object = None,
        operator_fault_string: object = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(user_message if user_message is not None else user_fault_string, **kwargs)
        self.user_message = self.msg
        operator = operator_message if operator_message is not None else operator_fault_string
        self.operator_message = as_message(operator) or self.msg


class DeviceUnreachable(DriverError):
    """The device did not answer; the same call may succeed later."""

    message = "The device could not be reached: {reason}"
    retryable = True


class DeviceBusy(DriverError):
    """The device is locked by another client or overloaded; try again later."""

    message = "The device is busy: {reason}"
    retryable = True


class InvalidConfiguration(DriverError):
    """The desired state cannot be applied as given; retrying cannot help."""

    message = "The device refused the configuration: {reason}"


class NotSupported(DriverError):
    """The driver does not implement this operation or feature."""

    message = "Not supported by this driver: {reason}"


@dataclasses.dataclass(frozen=True)
class Change:
    """One change a driver applies.

    :ivar operation: ``create``, ``update`` or ``delete``.
    :ivar resource: the target's desired state (for a delete, its last one).
    :ivar tree: the desired state of the target's whole root tree; for a
        delete, the target is still in it. Each resource in it carries its
        provisioning status: one whose create failed is there too, and
        stays off the device (:meth:`Resource.without_failed_creates`).
    :ivar cascade: a delete of ``resource`` with everything under it, given
        in its ``children``; only a driver that declares
        :attr:`Driver.deletes_tree` is given one.
    """

    task_id: str
    operation: str
    generation: int
    attempt: int
    request_id: str | None
    resource: Resource
    tree: Resource
    cascade: bool = False


class Callbacks:
    """What a driver reports back, while or after applying a change, or
    whenever it learns something of its device.

    The agent carries these reports to the plugin; calling them is optional,
    and each may be called from any thread of the driver.
    """

    def operating_status(self, resource_id: str, status: OperatingStatus) -> None:
        """Report the fabric status of a resource (``ONLINE``, ``DEGRADED`` ...).

        During a call (in its thread) the status goes with the task's
        result. From any other thread (a device event, a poller of the
        driver's own) it reaches the resource within about a second; a
        resource the driver does not serve is refused, and the agent logs
        that once.

        :raises ValueError: for a value that is not an operating status.
        """

    def progress(self, message: str, task_id: str | None = None) -> None:
        """Report progress of a call, for people watching the task: the
        task shows the latest message within a second.

        :param task_id: the task the message is about; needed only from a
            thread of the driver's own (the call's thread is known).
        """

    def stats(self, resource_id: str, counters: Mapping[str, float]) -> None:
        """Report counters of a resource (sessions, bytes in and out ...), from
        any thread; the resource shows the latest within about a second.
        Counters that are not finite are left out.

        :raises ValueError: for more than 100 counters, or a name longer
            than 64 characters.
        """


class Driver(abc.ABC):
    """Base class of every driver.

    Subclasses implement :meth:`create`, :meth:`update` and :meth:`delete`
    (an incomplete driver fails when it loads, naming what is missing) and
    declare:

    :cvar resource_types: the resource type names this driver applies; a
        change to any other type fails with :class:`NotSupported`.
    :cvar placement: ``shared`` when any agent can reach the device (remote
        management API), ``host`` when the device lives on the agent's host.
    :cvar capabilities: feature names the driver offers (``operating_status``,
        ``stats``) and the constraints of :mod:`tether.common.capabilities`
        on what it can apply, e.g. ``AllowedValues("listener", "protocol",
        {"HTTP", "TCP"})`` or ``MaxChildren("pool", "member", 100)``. Agents
        report them, and the plugin refuses with 400, before writing
        anything, a change no live driver of the provider supports. What no
        constraint names is supported.
    :cvar deletes_tree: how a cascade delete (``DELETE ...?cascade=true``)
        reaches the driver. False (the default): :meth:`delete` is called
        once per resource, children before parents, each an ordinary delete
        whose ``tree`` no longer holds what was removed before it. True:
        :meth:`delete` is called once, with ``change.cascade`` set and the
        whole subtree in ``change.resource.children``, and must remove all
        of it, as a device that keeps a tree as one configuration can.

    :param conf: the process configuration; the driver's own options live in
        the group ``[driver:NAME]`` and are listed by :meth:`list_opts`.
    :param callbacks: where to report status.
    """

    name: ClassVar[str] = ""
    resource_types: ClassVar[frozenset[str]] = frozenset()
    placement: ClassVar[Placement] = "shared"
    capabilities: ClassVar[Collection[str | Constraint]] = frozenset()
    deletes_tree: ClassVar[bool] = False

    def __init__(self, conf: cfg.ConfigOpts, callbacks: Callbacks) -> None:
        self.conf = conf
        self.callbacks = callbacks

    @classmethod
    def list_opts(cls) -> list[cfg.Opt]:
        """Options of this driver, registered under ``[driver:NAME]``."""
        return []

    def current_capabilities(self) -> Capabilities:
        """What this driver, as configured, supports: its ``capabilities``,
        checked. Override it to add what the options decide (a limit read
        from ``[driver:NAME]``). The agent reads it once, when it loads the
        driver, and refuses to start when it is malformed.

        :raises ValueError: naming a malformed or contradictory declaration.
        """
        return Capabilities.of(self.capabilities, self.resource_types)

    def check_supported(self, change: Change) -> None:
        """Refuse a change that breaks :meth:`current_capabilities`, as the
        plugin does at accept: only the target resource is judged (its
        attributes; for a create, its parent's number of children of its type).

        The plugin accepts changes unchecked until an agent of the provider
        has reported, so call this rather than apply what you cannot do.

        :raises NotSupported: with the message the plugin would give.
        """
        resource, tree = change.resource, change.tree
        # An update adds no child: a number of children is judged at create.
        creating = change.operation == "create" and resource.parent_id is not None
        parent = tree.find(resource.parent_id or "") if creating else None
        refusal = self.current_capabilities().judge(
            resource.type,
            resource.attributes,
            resource_types.defaults(resource.type),
            None if parent is None else (parent.type, parent.id),
            lambda: sum(1 for c in parent.children if c.type == resource.type) if parent else 0,
        )
        if refusal is not None:
            raise NotSupported(refusal.message(self.name or type(self).__name__))

    @abc.abstractmethod
    def create(self, change: Change) -> InProgress | Steps | None:
        """Make the device hold ``change.resource`` as desired.

        :returns: None when the device holds it, :class:`InProgress` when
            the device works on and :meth:`poll` should be asked later, or
            :class:`Steps` for the agent to run one by one.
        :raises DriverError: or a subclass, when the device cannot.
        """

    @abc.abstractmethod
    def update(self, change: Change) -> InProgress | Steps | None:
        """Make the device hold the new desired state of ``change.resource``.

        :returns: as for :meth:`create`.
        :raises DriverError: or a subclass, when the device cannot.
        """

    @abc.abstractmethod
    def delete(self, change: Change) -> InProgress | Steps | None:
        """Remove ``change.resource`` from the device; absent is success.

        With ``change.cascade`` (drivers that declare :attr:`deletes_tree`
        only), remove everything under it too.

        :returns: as for :meth:`create`.
        :raises DriverError: or a subclass, when the device cannot.
        """

    def poll(self, change: Change, operation: InProgress) -> InProgress | None:
        """Check on an operation that an earlier call left running.

        Called without holding a worker in between, possibly many times; the
        task's deadline still applies. If the agent restarts meanwhile, the
        change is applied again from the start, so ``create`` etc. must
        recognise an operation already under way on the device.

        :returns: None when done, or :class:`InProgress` to be asked again.
        :raises DriverError: or a subclass, when the operation failed.
        """
        raise NotSupported(
            f"the {self.name or type(self).__name__} driver returned InProgress but has no poll()"
        )

    def converge(self, keep: Collection[str], written_before: float) -> None:
        """Host placement: remove from this host every root resource not in ``keep``.

        Called periodically with the roots the plugin has bound to this agent
        (after a failover they are elsewhere). Only copies last written
        before ``written_before`` (a ``time.time()``) may go: a root bound
        since the list was made is not in it yet.
        """

    def status(
        self, roots: Collection[str] | None = None
    ) -> tuple[Mapping[str, OperatingStatus], Mapping[str, Mapping[str, float]]]:
        """Operating status and counters of what the device holds, by resource
        id. The agent polls it every ``[agent] status_interval`` in a thread of
        its own, and its answer reaches the resources as what
        :class:`Callbacks` reports does. Nothing by default.

        For a shared provider each root is polled by one live agent of the
        provider (the plugin shares them out; when an agent dies its roots
        go to the others), so query the device for those trees only; for a
        host-placed one, each agent polls the trees bound to it.

        :param roots: the ids of the root resources whose trees to report
            on; None for everything the device holds. A driver whose
            ``status()`` takes no argument (the earlier form) keeps working:
            one agent polls it for the whole device.
        """
        return {}, {}

    def inventory(self) -> Mapping[str, Mapping[str, Any]] | None:
        """What the device really holds, for the drift audit: by resource id,
        the attributes the device knows of each (those it cannot tell may be
        left out; they are not compared). For host placement, what this host
        holds.

        The agent compares it now and then with the desired state of the
        resources placed on it; a resource missing here, or holding other
        values, shows ``in_sync: false`` with its ``drift``. Return None (the
        default) when the driver cannot list its device: nothing is audited.
        """
        return None

    def sync_standby(self, tree: Resource, peer: Peer | None) -> None:
        """Hold ``tree`` as the standby of a root of topology ``ACTIVE_STANDBY``,
        ready to serve it, without taking its traffic, when ``peer`` (the
        active; None if unknown) fails. Called again when the tree or the
        peer changes, and after the agent restarts; idempotent as
        :meth:`create` is. :meth:`converge` removes it when it is no longer
        this host's. Not implemented (the default): the driver cannot be a standby.

        :raises DriverError: as :meth:`create` does; the agent logs it and tries again.
        """
        raise NotSupported(f"the {self.name or type(self).__name__} driver keeps no standby")

    def sync_active(self, root_id: str, peer: Peer | None) -> None:
        """This host serves root ``root_id`` (of topology ``ACTIVE_STANDBY``)
        as the active, its standby being ``peer`` (None: none now). Called
        when that changes, e.g. when this host's standby copy was promoted."""

    def peer_address(self) -> str | None:
        """The address this host's peers reach this driver at (sent with the
        agent's state reports, given to the other side as :attr:`Peer.address`)."""
        return None

    def close(self) -> None:
        """Release connections and files; called when the agent stops."""


def driver_group(name: str) -> str:
    """The ini section of a driver's own options."""
    return f"driver:{name}"


def opts_entry_point(driver: type[Driver]) -> Callable[[], list[tuple[str, list[cfg.Opt]]]]:
    """What a driver package names as its ``oslo.config.opts`` entry point, so that
    oslo-config-generator (``namespace = <the entry point's name>``) lists its
    ``[driver:NAME]`` section: ``list_opts = opts_entry_point(MyDriver)``."""
    return lambda: [(driver_group(driver.name), driver.list_opts())]
