"""The server side of the plugin's RPC API (see :mod:`tether.common.rpc`).

Agents call it to claim a task before running it, to report their state
and their devices' status, and to give back what they held when they
restarted.

Nothing checks who sends a call but the broker, and an agent retries a
claim the plugin answered with an error, so every method first checks its
arguments: a malformed call is answered with :class:`MalformedMessage`
naming the argument (the caller sees it as a ``RemoteError``), logged in
one line rather than a traceback, and changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from sqlalchemy import orm

from tether import __version__
from tether.common import claims, messages, rpc
from tether.common.claims import MAX_CLAIMS, Claim, ClaimAnswer
from tether.common.exceptions import MalformedMessage
from tether.common.states import MAX_STEPS, StepState
from tether.plugin.agents import endpoint_checks as checks
from tether.plugin.agents import standby_pairs, status_polling, status_reports
from tether.plugin.agents.providers import Providers
from tether.plugin.agents.registry import AgentRegistry
from tether.plugin.db import agent_queries, queries
from tether.plugin.tasks import lifecycle
from tether.plugin.tasks.claim_decider import ClaimDecider
from tether.plugin.tasks.lifecycle import drift, step_records

LOG = logging.getLogger(__name__)


class PluginEndpoint:
    """What agents may call.

    oslo.messaging dispatches a call to any public attribute of an endpoint,
    so everything but the RPC methods (and ``target``) is private.
    """

    target = rpc.endpoint_target()

    def __init__(
        self,
        sessionmaker: orm.sessionmaker[orm.Session],
        policy: lifecycle.Policy,
        agents: AgentRegistry,
        providers: Providers | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._policy = policy
        self._agents = agents
        self._providers = providers
        self._claims = ClaimDecider(sessionmaker, policy, providers)
        self._shares = status_polling.RootShares()

    @checks.checked
    def claim(
        self,
        ctxt: Any,
        task_id: str,
        agent_id: str,
        claim_id: str,
        redelivered: bool,
        driver_timeout: float,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """PENDING → RUNNING for this agent, with the next attempt number
        (API 1.0; agents of this release claim over kombu).

        :returns: ``{"run": True, "attempt": N, "max_attempts": M}``, or
            ``{"run": False, "reason": ...}`` when the agent must ack the
            message and skip it.
        """
        claim = _claim(
            "claim",
            {
                "task_id": task_id,
                "agent_id": agent_id,
                "claim_id": claim_id,
                "redelivered": redelivered,
                "driver_timeout": driver_timeout,
                "request_id": request_id,
            },
        )
        return self._claims.decide([claim])[0].as_dict()

    @checks.checked
    def claim_batch(self, ctxt: Any, claims: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Several claims in one transaction (API 1.2): each answer as
        :meth:`claim` gives it, in order, or ``{"error": {"type", "message"}}``
        for a malformed one."""
        if not isinstance(claims, list) or not 1 <= len(claims) <= MAX_CLAIMS:
            raise checks.bad("claim_batch", "claims", f"a list of 1 to {MAX_CLAIMS} claims", claims)
        answers: list[ClaimAnswer | None] = [None] * len(claims)
        valid: list[tuple[int, Claim]] = []
        for i, item in enumerate(claims):
            try:
                valid.append((i, _claim(f"claim_batch claims[{i}]", item)))
            except MalformedMessage as exc:
                LOG.warning("refused a malformed claim: %s", exc.msg)
                answers[i] = ClaimAnswer(error_type="MalformedMessage", error_message=exc.msg)
        for (i, _), answer in zip(valid, self._claims.decide([claim for _, claim in valid]), strict=True):
            answers[i] = answer
        return [answer.as_dict() for answer in answers if answer is not None]

    @checks.checked
    def progress(
        self, ctxt: Any, task_id: str, attempt: int, agent_id: str, message: str, expect_within: float
    ) -> dict[str, Any]:
        """A long device operation goes on: show its progress, move the deadline.

        :returns: ``{"current": False}`` when the attempt was fenced off, so
            the agent drops the operation.
        """
        checks.identifier("progress", "task_id", task_id)
        checks.counter("progress", "attempt", attempt)
        checks.identifier("progress", "agent_id", agent_id)
        expect_within = checks.seconds("progress", "expect_within", expect_within)
        with self._sessionmaker.begin() as session:
            task = queries.task_for_update(session, task_id)
            current = lifecycle.progress(self._policy, task, attempt, str(message), expect_within)
            return {"current": current}

    @checks.checked
    def plan_steps(
        self, ctxt: Any, task_id: str, attempt: int, agent_id: str, names: list[str]
    ) -> dict[str, Any]:
        """An attempt is about to run its operation in these steps (API 1.4).

        :returns: ``{"current": True, "done": [names]}``: the steps an
            earlier attempt finished, which this one skips; or
            ``{"current": False}`` when the attempt was fenced off.
        """
        checks.identifier("plan_steps", "task_id", task_id)
        checks.counter("plan_steps", "attempt", attempt)
        checks.identifier("plan_steps", "agent_id", agent_id)
        if not isinstance(names, list) or not 1 <= len(names) <= MAX_STEPS:
            raise checks.bad("plan_steps", "names", f"a list of 1 to {MAX_STEPS} step names", names)
        for name in names:
            checks.identifier("plan_steps", "names[]", name)
        if len(set(names)) != len(names):
            raise checks.bad("plan_steps", "names", "a list of distinct step names", names)
        with self._sessionmaker.begin() as session:
            task = queries.task_for_update(session, task_id)
            done = step_records.plan(session, task, attempt, names)
            return {"current": False} if done is None else {"current": True, "done": done}

    @checks.checked
    def step(
        self,
        ctxt: Any,
        task_id: str,
        attempt: int,
        agent_id: str,
        position: int,
        state: str,
        error_type: str | None = None,
        error_message: str | None = None,
    ) -> dict[str, Any]:
        """A step of a planned operation started, ended or was undone (API 1.4).

        :returns: ``{"current": False}`` when the attempt was fenced off, so
            the agent stops.
        """
        checks.identifier("step", "task_id", task_id)
        checks.counter("step", "attempt", attempt)
        checks.identifier("step", "agent_id", agent_id)
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < MAX_STEPS:
            raise checks.bad("step", "position", f"an integer from 0 to {MAX_STEPS - 1}", position)
        if state not in step_records.REPORTED:
            raise checks.bad("step", "state", f"one of {', '.join(sorted(step_records.REPORTED))}", state)
        checks.identifier("step", "error_type", error_type, optional=True)
        checks.text("step", "error_message", error_message, 10_000, optional=True)
        with self._sessionmaker.begin() as session:
            task = queries.task_for_update(session, task_id)
            try:
                current = step_records.record(
                    session, task, attempt, agent_id, position, StepState(state), error_type, error_message
                )
            except LookupError as exc:
                raise MalformedMessage(reason=f"RPC call step: {exc}; plan_steps comes first") from exc
            return {"current": current}

    @checks.checked
    def audit_targets(self, ctxt: Any, agent_id: str, provider: str) -> dict[str, Any]:
        """What the agent's ``provider`` device should hold, for its drift audit (API 1.5).

        :returns: ``{"audit": True, "resources": {id: {"type", "generation",
            "attributes"}}}``: the settled resources placed on the agent (the
            trees bound to it, or, for a shared provider, all of them if this
            agent is the one of its live auditing agents that audits); or
            ``{"audit": False}`` when another agent audits that device.
        """
        checks.identifier("audit_targets", "agent_id", agent_id)
        checks.identifier("audit_targets", "provider", provider)
        with self._sessionmaker.begin() as session:
            placed = self._placed(session, agent_id, provider)
            return {"audit": False} if placed is None else {"audit": True, "resources": placed}

    @checks.checked
    def report_drift(
        self,
        ctxt: Any,
        agent_id: str,
        provider: str,
        audited: dict[str, int],
        drifted: dict[str, Any],
        undesired: list[str],
        repair: list[str] | bool = False,
    ) -> dict[str, Any]:
        """What a drift audit found (API 1.5); each drifted resource named in
        ``repair`` (or all of them, for True) gets an update that applies it again.

        Only the resources :meth:`audit_targets` would give this agent now,
        at the generation it compared, take the report.

        :returns: ``{"repairing": [ids]}``.
        """
        checks.identifier("report_drift", "agent_id", agent_id)
        checks.identifier("report_drift", "provider", provider)
        checks.drift_report(audited, drifted, undesired, repair)
        with self._sessionmaker.begin() as session:
            # The agent's row before its trees, as its state reports take them.
            agent = agent_queries.lock_agent(session, agent_id)
            if agent is None:
                raise MalformedMessage(
                    reason=f"RPC call report_drift: no agent {agent_id!r} has reported its state"
                )
            placed = self._placed(session, agent_id, provider)
            if placed is None:
                return {"repairing": []}  # another agent audits this device now
            repairs = set(drifted) if repair is True else set(repair or [])
            repairing = drift.record(
                session, self._policy, agent, provider, placed, audited, drifted, undesired, repairs
            )
            return {"repairing": repairing}

    def _placed(self, session: orm.Session, agent_id: str, provider: str) -> dict[str, Any] | None:
        """The settled resources of ``provider`` the agent audits, or None
        when another agent audits that device."""
        roots: list[str] | None = None
        if self._providers is not None and self._providers.is_host_placed(provider, session):
            roots = [
                root.id for root in agent_queries.bound_to(session, agent_id) if root.provider == provider
            ]
        else:
            # One audit of a shared device is enough: the first live agent that audits it.
            auditors = sorted(
                a.id for a in self._agents.live_for(session, provider) if provider in (a.audits or [])
            )
            if not auditors or auditors[0] != agent_id:
                return None
        return drift.targets(session, provider, roots)

    @checks.checked
    def report_state(self, ctxt: Any, state: dict[str, Any]) -> dict[str, Any]:
        """Record an agent's heartbeat; tell it whether it may take work."""
        checks.check_state(state)
        with self._sessionmaker.begin() as session:
            agent = self._agents.report(session, state)
            if self._providers is not None and agent.drivers:
                self._providers.heard(agent.drivers, session)
            bound = agent_queries.bound_to(session, agent.id)
            # What agents of an earlier release report, polled or pushed, of any provider.
            status_reports.apply(
                session, agent, None, state.get("statuses") or {}, state.get("stats") or {}, self._host_placed
            )
            by_provider: dict[str, list[str]] = {}
            # What it stands by for is held on its host too (tether.plugin.agents.standby_pairs).
            for root in [*bound, *standby_pairs.stood_by(session, agent.id)]:
                by_provider.setdefault(root.provider, []).append(root.id)
            return {
                "admin_state_up": agent.admin_state_up,
                "plugin_version": __version__,
                # The claims request version this plugin reads on the claims
                # queue; agents of this release claim over oslo.messaging
                # until a plugin says so (one of the previous release does not).
                "kombu_claims": claims.VERSION,
                # The results message version this plugin reads: agents send
                # one result per message until a plugin says so.
                "result_batches": messages.VERSION,
                # Agents send statuses by report_status, not with their state reports.
                "status_reports": True,
                "bound": by_provider,
            }

    @checks.checked
    def status_targets(self, ctxt: Any, agent_id: str, provider: str) -> dict[str, Any]:
        """The roots whose status the agent's ``provider`` driver reports (API 1.7).

        :returns: ``{"roots": [ids], "whole": bool}``: the roots bound to
            the agent for a host-placed provider; for a shared one, the
            agent's share of the provider's roots among its live agents
            (:mod:`tether.plugin.agents.status_polling`). ``whole`` says whether
            the agent polls a driver whose ``status()`` takes no roots.
        """
        checks.identifier("status_targets", "agent_id", agent_id)
        checks.identifier("status_targets", "provider", provider)
        with self._sessionmaker.begin() as session:
            if self._host_placed(provider):
                roots = [r.id for r in agent_queries.bound_to(session, agent_id) if r.provider == provider]
                return {"roots": roots, "whole": True}
            live = [a.id for a in self._agents.live_for(session, provider)]
            every = agent_queries.roots_of(session, provider) if agent_id in live else []
        return {
            "roots": self._shares.share(provider, every, live, agent_id),
            "whole": status_polling.owner(provider, live) == agent_id,
        }

    @checks.checked
    def report_status(self, ctxt: Any, agent_id: str, reports: dict[str, Any]) -> dict[str, Any]:
        """Operating status and counters the agent's drivers reported outside a
        task (API 1.7): ``{provider: {"statuses": {id: status}, "stats": {id:
        counters}}}``.

        :returns: ``{"refused": {provider: {id: why}}, "busy": {provider:
            [ids]}}``: what is not the agent's to report, and what it should
            send again (its tree was busy).
        """
        checks.identifier("report_status", "agent_id", agent_id)
        checks.status_reports(reports)
        refused: dict[str, dict[str, str]] = {}
        busy: dict[str, list[str]] = {}
        with self._sessionmaker.begin() as session:
            agent = agent_queries.get_agent(session, agent_id)
            for provider, report in reports.items():
                applied = status_reports.apply(
                    session,
                    agent,
                    provider,
                    report.get("statuses") or {},
                    report.get("stats") or {},
                    self._host_placed,
                )
                if applied.refused:
                    refused[provider] = applied.refused
                if applied.busy:
                    busy[provider] = applied.busy
        return {"refused": refused, "busy": busy}

    def _host_placed(self, provider: str) -> bool:
        return self._providers is not None and self._providers.is_host_placed(provider)

    @checks.checked
    def resync(self, ctxt: Any, agent_id: str, started_at: str) -> dict[str, Any]:
        """An agent (re)started: dispatch again, at once, what its earlier life held."""
        checks.identifier("resync", "agent_id", agent_id)
        started = checks.time("resync", "started_at", started_at)
        redispatched = []
        with self._sessionmaker.begin() as session:
            for task in agent_queries.running_on(session, agent_id):
                if task.running_at is not None and task.running_at >= started:
                    continue
                lifecycle.abandon(
                    session,
                    self._policy,
                    task,
                    "AgentRestarted",
                    f"agent {agent_id} restarted during attempt {task.attempt}",
                    delay=0.0,
                )
                redispatched.append(task.id)
            for root in agent_queries.bound_to(session, agent_id):
                # What this host should hold, applied in full: restarts what is missing.
                if not queries.in_flight_tasks(session, root.id):
                    lifecycle.reapply(session, self._policy, root, f"agent {agent_id} restarted")
        if redispatched:
            LOG.warning(
                "agent %s restarted holding %d task(s); dispatched again: %s",
                agent_id,
                len(redispatched),
                ", ".join(redispatched),
            )
        return {"redispatched": redispatched}


def _claim(method: str, args: Any) -> Claim:
    """A claim of the RPC API, checked as one of a kombu claims request is."""
    if not isinstance(args, dict) or not set(args) <= _CLAIM_FIELDS:
        raise checks.bad(method, "the claim", f"an object of {', '.join(sorted(_CLAIM_FIELDS))}", args)
    try:
        return msgspec.convert(args, Claim)
    except msgspec.ValidationError as exc:
        raise MalformedMessage(reason=f"RPC call {method}: {exc}") from exc


_CLAIM_FIELDS = frozenset(Claim.__struct_fields__)
