"""What each caller may do: oslo.policy rules with defaults in code.

Three roles ship: ``reader`` reads its own project, ``member`` reads and
changes its own project, ``admin`` reads and changes every project and
manages agents, providers and dead letters. Every operation of the API
checks one rule (``tether:<resource type>:<action>``, ``tether:task:retry``,
``tether:agent:update``, ``tether:dead_letter:replay``, ...); an operator
overrides any of them in the policy file (``[oslo_policy] policy_file``,
default ``policy.yaml`` beside the configuration), which oslo.policy reads
again when it changes; a change takes effect within a second (decisions
are remembered that long: oslo.policy looks at the file and evaluates the
rule on every check, which cost more than the rest of an accept).
``etc/tether/policy.yaml.sample`` lists them all.

The project boundary itself is not a rule: queries only ever see the
caller's project, unless ``tether:all_projects`` lets the caller see all.
That way a rule written too loosely cannot leak another project's rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from oslo_config import cfg
from oslo_policy import policy

from tether.common.exceptions import Forbidden
from tether.common.resource_types import Registry, ResourceType
from tether.plugin.api.auth import Identity

ADMIN = "role:admin"
READER = "role:reader or role:member or role:admin"
MEMBER = "role:member or role:admin"

_ACTIONS = (
    ("list", "GET", "/v1/{collection}", "rule:project_reader", "List {name}s of the caller's project"),
    ("get", "GET", "/v1/{collection}/{{id}}", "rule:project_reader", "Show a {name}"),
    ("create", "POST", "/v1/{collection}", "rule:project_member", "Create a {name}"),
    ("update", "PUT", "/v1/{collection}/{{id}}", "rule:project_member", "Change a {name}"),
    ("delete", "DELETE", "/v1/{collection}/{{id}}", "rule:project_member", "Delete a {name}"),
    (
        "reapply",
        "POST",
        "/v1/{collection}/{{id}}/reapply",
        "rule:admin",
        "Apply a {name}'s desired state to its device again",
    ),
)


def _rule(name: str, check: str, description: str, method: str, path: str) -> policy.DocumentedRuleDefault:
    return policy.DocumentedRuleDefault(
        name=name, check_str=check, description=description, operations=[{"method": method, "path": path}]
    )


def resource_rules(rtype: ResourceType) -> list[policy.RuleDefault]:
    return [
        _rule(
            f"tether:{rtype.name}:{action}",
            check,
            description.format(name=rtype.name),
            method,
            path.format(collection=rtype.collection),
        )
        for action, method, path, check, description in _ACTIONS
    ]


def base_rules() -> list[policy.RuleDefault]:
    return [
        policy.RuleDefault("admin", ADMIN, description="Acts on every project and on the fleet."),
        policy.RuleDefault("project_reader", READER, description="Reads its own project."),
        policy.RuleDefault("project_member", MEMBER, description="Reads and changes its own project."),
        policy.RuleDefault(
            "tether:all_projects",
            "rule:admin",
            description="Sees and changes the resources and tasks of every project, not only its own.",
        ),
        _rule("tether:discovery", "", "List the resource types and providers", "GET", "/v1"),
        _rule("tether:task:list", "rule:project_reader", "List tasks", "GET", "/v1/tasks"),
        _rule("tether:task:get", "rule:project_reader", "Show a task", "GET", "/v1/tasks/{id}"),
        _rule("tether:task:cancel", "rule:project_member", "Cancel a task", "POST", "/v1/tasks/{id}/cancel"),
        _rule(
            "tether:task:retry", "rule:project_member", "Retry a failed task", "POST", "/v1/tasks/{id}/retry"
        ),
        _rule("tether:agent:list", "rule:admin", "List agents", "GET", "/v1/agents"),
        _rule("tether:agent:get", "rule:admin", "Show an agent", "GET", "/v1/agents/{id}"),
        _rule("tether:agent:update", "rule:admin", "Enable or disable an agent", "PUT", "/v1/agents/{id}"),
        _rule(
            "tether:provider:list", "rule:admin", "List providers and their backlog", "GET", "/v1/providers"
        ),
        _rule("tether:metrics", "rule:admin", "Read the Prometheus metrics", "GET", "/metrics"),
        _rule("tether:dead_letter:list", "rule:admin", "List dead letters", "GET", "/v1/dead-letters"),
        _rule(
            "tether:dead_letter:replay",
            "rule:admin",
            "Send dead letters back where they came from",
            "POST",
            "/v1/dead-letters/replay",
        ),
        _rule(
            "tether:dead_letter:purge",
            "rule:admin",
            "Delete dead letters for good",
            "POST",
            "/v1/dead-letters/purge",
        ),
    ]


def list_rules(registry: Iterable[ResourceType] | None = None) -> list[policy.RuleDefault]:
    """Every rule, for the enforcer and ``oslopolicy-sample-generator``."""
    types = Registry.load().values() if registry is None else registry
    return base_rules() + [rule for rtype in types for rule in resource_rules(rtype)]


class AccessPolicy:
    #: seconds a decision is remembered, so how late a changed policy file applies
    REMEMBER = 1.0

    def __init__(self, conf: cfg.ConfigOpts, registry: Iterable[ResourceType]) -> None:
        self._enforcer = policy.Enforcer(conf)
        self._enforcer.register_defaults(list_rules(registry))
        self._descriptions = {
            rule.name: rule.description for rule in self._enforcer.registered_rules.values()
        }
        self._decisions: dict[tuple[str, str, frozenset[str]], bool] = {}
        self._since = time.monotonic()

    def allowed(self, rule: str, identity: Identity) -> bool:
        # A decision depends on the rule, the project and the roles only.
        key = (rule, identity.project_id, identity.roles)
        now = time.monotonic()
        if now - self._since > self.REMEMBER:
            self._decisions, self._since = {}, now
        decision = self._decisions.get(key)
        if decision is None:
            decision = bool(self._enforcer.authorize(rule, _target(identity), _creds(identity)))
            self._decisions[key] = decision
        return decision

    def authorize(self, rule: str, identity: Identity) -> None:
        if not self.allowed(rule, identity):
            roles = ", ".join(sorted(identity.roles)) or "none"
            action = self._descriptions.get(rule) or rule
            raise Forbidden(
                action=action,
                reason=f"policy {rule} does not allow it for your roles ({roles}); "
                "ask an administrator of this tether for a role that does",
            )


def _target(identity: Identity) -> dict[str, str]:
    return {"project_id": identity.project_id}


def _creds(identity: Identity) -> dict[str, object]:
    return {"project_id": identity.project_id, "roles": sorted(identity.roles)}


def get_enforcer() -> policy.Enforcer:
    """For ``oslopolicy-checker`` and ``oslopolicy-policy-generator``."""
    conf = cfg.ConfigOpts()
    conf([], project="tether")
    enforcer = policy.Enforcer(conf)
    enforcer.register_defaults(list_rules())
    return enforcer
