"""Authentication strategies: noauth, the token file, Keystone."""

from __future__ import annotations

import pathlib
import uuid

import pytest
from fastapi.testclient import TestClient
from keystonemiddleware import fixture as keystone_fixture
from oslo_config import cfg

from tether.common.exceptions import ConfigError, Unauthorized
from tether.plugin.api import auth
from tether.plugin.service import Plugin


def test_noauth_is_refused_unless_the_api_listens_on_loopback(conf: cfg.ConfigOpts) -> None:
    conf.set_override("bind_host", "0.0.0.0", group="api")
    with pytest.raises(ConfigError) as refused:
        Plugin(conf, migrate=True)
    assert "auth_strategy = noauth" in refused.value.msg and "0.0.0.0" in refused.value.msg
    assert "token_file" in refused.value.msg
    for loopback in ("127.0.0.1", "::1", "localhost", "127.0.0.53"):
        conf.set_override("bind_host", loopback, group="api")
        assert isinstance(auth.from_conf(conf), auth.NoAuth)


def test_the_token_strategy_needs_a_token_file(conf: cfg.ConfigOpts) -> None:
    conf.set_override("auth_strategy", "token", group="api")
    with pytest.raises(ConfigError, match=r"needs \[api\] token_file.*tether-manage token create"):
        auth.from_conf(conf)


def test_the_token_file_holds_digests_only_and_identifies_by_either_header(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "tokens.yaml"
    token = auth.add_token(path, "acme", ["member", "reader"], name="ci")
    assert token.startswith(auth.TOKEN_PREFIX)
    assert token not in path.read_text() and auth.token_digest(token) in path.read_text()
    assert path.stat().st_mode & 0o077 == 0
    tokens = auth.TokenFile(path)
    for headers in ({"X-Auth-Token": token}, {"Authorization": f"Bearer {token}"}):
        assert tokens.identify(headers) == auth.Identity("acme", frozenset({"member", "reader"}))
    for headers in ({}, {"X-Auth-Token": token + "x"}, {"Authorization": f"Basic {token}"}):
        with pytest.raises(Unauthorized):
            tokens.identify(headers)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("tokens: [", "not valid YAML"),
        ("- a\n- b\n", "a list under 'tokens'"),
        ("tokens: [{sha256: abc, project: p, roles: [member]}]", "entry 1 needs sha256"),
        (f"tokens: [{{sha256: {'a' * 64}, roles: [member]}}]", "entry 1 needs a project"),
        (
            f"tokens: [{{sha256: {'a' * 64}, project: p, roles: [root]}}]",
            "roles, a list of reader, member, admin",
        ),
    ],
)
def test_a_bad_token_file_is_refused_with_what_is_wrong(
    tmp_path: pathlib.Path, content: str, problem: str
) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as refused:
        auth.read_token_file(path)
    assert problem in refused.value.msg and str(path) in refused.value.msg


def test_reload_takes_new_and_revoked_tokens_and_keeps_the_old_set_over_a_broken_file(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "tokens.yaml"
    first = auth.add_token(path, "acme", ["member"], name="first")
    tokens = auth.TokenFile(path)
    second = auth.add_token(path, "acme", ["reader"], name="second")
    with pytest.raises(Unauthorized):
        tokens.identify({"X-Auth-Token": second})
    tokens.reload()
    assert tokens.identify({"X-Auth-Token": second}).roles == {"reader"}
    assert auth.revoke_token(path, "first") == 1
    tokens.reload()
    with pytest.raises(Unauthorized):
        tokens.identify({"X-Auth-Token": first})
    path.write_text("tokens: [")
    tokens.reload()
    assert tokens.identify({"X-Auth-Token": second}).project_id == "acme"


def test_keystone_tokens_are_validated_by_keystonemiddleware(conf: cfg.ConfigOpts) -> None:
    conf.set_override("auth_strategy", "keystone", group="api")
    conf.set_override("www_authenticate_uri", "https://keystone.example/v3", group="keystone_authtoken")
    with keystone_fixture.AuthTokenFixture() as keystone:
        project = uuid.uuid4().hex
        token = uuid.uuid4().hex
        keystone.add_token_data(token_id=token, project_id=project, role_list=["member"])
        with TestClient(Plugin(conf, migrate=True).app) as api:
            made = api.post("/v1/loadbalancers", json={"provider": "noop"}, headers={"X-Auth-Token": token})
            assert made.status_code == 202, made.text
            assert made.json()["project_id"] == project
            # Identity headers from the caller are stripped, not believed.
            forged = {"X-Auth-Token": "unknown", "X-Project-Id": project, "X-Roles": "admin"}
            refused = api.get("/v1/loadbalancers", headers=forged)
            assert refused.status_code == 401
            assert "Keystone did not confirm the token" in refused.json()["error"]["message"]
            assert api.get("/v1/agents", headers={"X-Auth-Token": token}).status_code == 403
