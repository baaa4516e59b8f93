"""What the haproxy driver writes to haproxy.cfg for a tree, checked by
``haproxy -c`` where HAProxy is installed."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
from typing import Any

import pytest
import trustme
from oslo_config import cfg

from tether.common import config
from tether.common.states import ProvisioningStatus
from tether.drivers.base import Callbacks, Change, InvalidConfiguration, Resource, driver_group
from tether.drivers.lbaas_models import Loadbalancer
from tether.reference_drivers.haproxy import HaproxyDriver
from tether.reference_drivers.haproxy import certificates as haproxy_certificates
from tether.reference_drivers.haproxy.haproxy_cfg import render

ACTIVE, ERROR = ProvisioningStatus.ACTIVE, ProvisioningStatus.ERROR


def _node(
    type_name: str,
    resource_id: str,
    attributes: dict[str, Any],
    parent_id: str | None = "lb",
    children: tuple[Resource, ...] = (),
    status: ProvisioningStatus | None = ACTIVE,
    applied: int | None = 1,
) -> Resource:
    return Resource(type_name, resource_id, "p", attributes, parent_id, children, status, applied)


def _listener(resource_id: str, port: int, **state: Any) -> Resource:
    return _node("listener", resource_id, {"protocol": "HTTP", "protocol_port": port}, **state)


def _pool(resource_id: str, *members: Resource, **state: Any) -> Resource:
    attributes = {"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}
    return _node("pool", resource_id, attributes, children=members, **state)


def _member(resource_id: str, port: int, **state: Any) -> Resource:
    return _node("member", resource_id, {"address": "192.0.2.1", "protocol_port": port}, "pool-1", **state)


def _lb(*children: Resource) -> Resource:
    return _node("loadbalancer", "lb", {"provider": "haproxy", "vip_address": "192.0.2.10"}, None, children)


def test_a_listener_whose_create_failed_is_not_written_to_haproxy_cfg(tmp_path: pathlib.Path) -> None:
    tree = _lb(
        _listener("served", 80),
        _listener("rejected", 81, status=ERROR, applied=0),
        _pool("pool-1", _member("m-1", 8080)),
    )
    written = render(tree, str(tmp_path))
    assert "frontend served" in written and "bind 192.0.2.10:80" in written
    assert "rejected" not in written and ":81" not in written


def test_a_pool_whose_create_failed_is_left_out_with_its_members(tmp_path: pathlib.Path) -> None:
    tree = _lb(_listener("served", 80), _pool("pool-1", _member("m-1", 8080), status=ERROR, applied=0))
    written = render(tree, str(tmp_path))
    assert "pool-1" not in written and "m-1" not in written


@pytest.mark.parametrize(
    ("status", "applied"),
    [
        (ERROR, 2),  # a failed update: the device holds generation 2
        (ProvisioningStatus.PENDING_UPDATE, 0),  # an update after a failed create creates it
        (ProvisioningStatus.PENDING_CREATE, 0),
        (None, None),  # from a plugin that did not say
    ],
)
def test_a_listener_is_written_unless_its_create_failed(
    tmp_path: pathlib.Path, status: ProvisioningStatus | None, applied: int | None
) -> None:
    written = render(_lb(_listener("l-1", 80, status=status, applied=applied)), str(tmp_path))
    assert "frontend l-1" in written


def test_a_member_of_a_pool_whose_create_failed_is_refused_naming_the_pool(tmp_path: pathlib.Path) -> None:
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf.register_opts(HaproxyDriver.list_opts(), group=driver_group("haproxy"))
    conf([], project="tether", default_config_files=[])
    conf.set_override("state_path", str(tmp_path))
    driver = HaproxyDriver(conf, Callbacks())
    member = _member("m-1", 8080, status=ProvisioningStatus.PENDING_CREATE, applied=0)
    tree = _lb(_pool("pool-1", member, status=ERROR, applied=0))
    with pytest.raises(InvalidConfiguration, match="belongs to pool pool-1, whose create failed"):
        driver.create(Change("t", "create", 1, 1, None, member, tree))
    assert not (tmp_path / "haproxy" / "lb").exists()


# -- what each attribute becomes ------------------------------------------------

HAPROXY = shutil.which("haproxy", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))


def _tree(
    listeners: list[dict[str, Any]] | None = None,
    pool: dict[str, Any] | None = None,
    monitor: dict[str, Any] | None = None,
    member: dict[str, Any] | None = None,
) -> Resource:
    """A load balancer of one pool, one member, a monitor if given and the
    listeners given (by default one HTTP listener on port 80)."""
    members = (
        _node("member", "m-1", {"address": "192.0.2.1", "protocol_port": 8080, **(member or {})}, "pool-1"),
    )
    monitors = (
        ()
        if monitor is None
        else (
            _node("healthmonitor", "hm-1", {"delay": 2, "timeout": 1, "max_retries": 2, **monitor}, "pool-1"),
        )
    )
    pool_attributes = {"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", **(pool or {})}
    children: list[Resource] = [
        _node("listener", f"l-{i}", {"protocol": "HTTP", "protocol_port": 80 + i, **attributes})
        for i, attributes in enumerate(listeners or [{}])
    ]
    children.append(_node("pool", "pool-1", pool_attributes, children=members + monitors))
    return _lb(*children)


def _rendered(tmp_path: pathlib.Path, tree: Resource) -> str:
    """haproxy.cfg of ``tree``, checked by ``haproxy -c`` when HAProxy is installed."""
    written = render(tree, str(tmp_path))
    if HAPROXY is not None:
        config = tmp_path / "haproxy.cfg"
        config.write_text(written)
        checked = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr + written
    return written


def _section(written: str, name: str) -> list[str]:
    lines = written.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[-1:] == [name] and not line[0].isspace())
    end = next((i for i in range(start + 1, len(lines)) if not lines[i][0].isspace()), len(lines))
    return [line.strip() for line in lines[start + 1 : end]]


def test_listener_timeouts_go_to_its_frontend_and_its_pool(tmp_path: pathlib.Path) -> None:
    timeouts = {"timeout_client_data": 7000, "timeout_member_connect": 1500, "timeout_member_data": 9000}
    written = _rendered(tmp_path, _tree([timeouts]))
    assert "timeout client 7000ms" in _section(written, "l-0")
    backend = _section(written, "pool-1")
    assert "timeout connect 1500ms" in backend and "timeout server 9000ms" in backend


def test_listeners_of_one_pool_that_disagree_on_a_member_timeout_are_refused_naming_them(
    tmp_path: pathlib.Path,
) -> None:
    agreeing = _rendered(tmp_path, _tree([{"timeout_member_data": 9000}, {"timeout_member_data": 9000}]))
    assert "timeout server 9000ms" in _section(agreeing, "pool-1")
    # One that sets nothing takes the default, which is a value too.
    with pytest.raises(InvalidConfiguration) as refused:
        render(_tree([{"timeout_member_data": 9000}, {}]), str(tmp_path))
    assert refused.value.user_message == (
        "pool pool-1 serves listeners with different timeout_member_data: l-0 (9000 ms), l-1 (50000 ms, "
        "the default). HAProxy sets it per pool: give those listeners the same timeout_member_data, or "
        "each its own pool."
    )


@pytest.mark.parametrize(
    ("persistence", "backend_lines", "server_words"),
    [
        ({"type": "SOURCE_IP"}, ["stick-table type ipv6 size 10k", "stick on src"], ""),
        ({"type": "HTTP_COOKIE"}, ["cookie SRV insert indirect nocache"], " cookie m-1"),
        (
            {"type": "APP_COOKIE", "cookie_name": "JSESSIONID"},
            [
                "stick-table type string len 64 size 10k",
                "stick store-response res.cook(JSESSIONID)",
                "stick match req.cook(JSESSIONID)",
            ],
            "",
        ),
        (
            # A cookie name may hold characters HAProxy's parser reads: quoted.
            {"type": "APP_COOKIE", "cookie_name": "a#b$c"},
            ["stick store-response 'res.cook(a#b$c)'", "stick match 'req.cook(a#b$c)'"],
            "",
        ),
    ],
)
def test_session_persistence(
    tmp_path: pathlib.Path, persistence: dict[str, str], backend_lines: list[str], server_words: str
) -> None:
    backend = _section(_rendered(tmp_path, _tree(pool={"session_persistence": persistence})), "pool-1")
    for line in backend_lines:
        assert line in backend
    assert f"server m-1 192.0.2.1:8080 weight 1{server_words}" in backend


def test_source_ip_persistence_works_in_a_tcp_pool_and_cookies_are_refused_there(
    tmp_path: pathlib.Path,
) -> None:
    tcp = [{"protocol": "TCP"}]
    written = _rendered(
        tmp_path, _tree(tcp, pool={"protocol": "TCP", "session_persistence": {"type": "SOURCE_IP"}})
    )
    assert "stick on src" in _section(written, "pool-1")
    with pytest.raises(
        InvalidConfiguration, match="HTTP_COOKIE session persistence reads cookies, which a TCP"
    ):
        render(
            _tree(tcp, pool={"protocol": "TCP", "session_persistence": {"type": "HTTP_COOKIE"}}),
            str(tmp_path),
        )


@pytest.mark.parametrize(
    ("codes", "expect"),
    [
        (None, "http-check expect status 200"),
        ("202", "http-check expect status 202"),
        ("200,202", "http-check expect rstatus '^(200|202)$'"),
        ("200-204", "http-check expect rstatus '^(200|201|202|203|204)$'"),
        ("301,200-202,201", "http-check expect rstatus '^(301|200|201|202)$'"),
        ("200-299,301-304,310-319", "http-check expect rstatus '^(2[0-9][0-9]|301|302|303|304|31[0-9])$'"),
        (
            "100-599",
            "http-check expect rstatus '^(1[0-9][0-9]|2[0-9][0-9]|3[0-9][0-9]|4[0-9][0-9]|5[0-9][0-9])$'",
        ),
    ],
)
def test_every_form_of_expected_codes_is_checked(
    tmp_path: pathlib.Path, codes: str | None, expect: str
) -> None:
    monitor = {"type": "HTTP", "expected_codes": codes, "http_method": "HEAD", "url_path": "/health?full=1"}
    backend = _section(_rendered(tmp_path, _tree(monitor=monitor)), "pool-1")
    assert "option httpchk HEAD /health?full=1" in backend
    assert expect in backend


def test_a_backwards_range_of_expected_codes_is_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(InvalidConfiguration, match="the range 204-200 runs backwards; write 200-204"):
        render(_tree(monitor={"type": "HTTP", "expected_codes": "204-200"}), str(tmp_path))


def test_a_url_path_with_characters_haproxy_reads_is_quoted(tmp_path: pathlib.Path) -> None:
    backend = _section(_rendered(tmp_path, _tree(monitor={"type": "HTTP", "url_path": "/a#b'c$d"})), "pool-1")
    assert "option httpchk GET '/a#b'\\''c$d'" in backend


@pytest.mark.parametrize(
    ("kind", "backend_line", "server_words"),
    [
        ("HTTP", "option httpchk GET /", ""),
        ("HTTPS", "option httpchk GET /", " check-ssl verify none"),
        ("TLS-HELLO", "option ssl-hello-chk", ""),
        ("TCP", None, ""),
    ],
)
def test_monitor_types(
    tmp_path: pathlib.Path, kind: str, backend_line: str | None, server_words: str
) -> None:
    pool = {"protocol": "HTTPS"} if kind in ("HTTPS", "TLS-HELLO") else {}
    listeners = [{"protocol": "HTTPS"}] if pool else None
    backend = _section(_rendered(tmp_path, _tree(listeners, pool=pool, monitor={"type": kind})), "pool-1")
    assert [line for line in backend if line.startswith("option")] == ([backend_line] if backend_line else [])
    assert "timeout check 1s" in backend
    assert f"server m-1 192.0.2.1:8080 weight 1 check inter 2s fall 3 rise 2{server_words}" in backend


def test_monitor_address_and_port_take_the_checks_elsewhere(tmp_path: pathlib.Path) -> None:
    member = {"monitor_address": "192.0.2.99", "monitor_port": 9000}
    backend = _section(_rendered(tmp_path, _tree(monitor={"type": "TCP"}, member=member)), "pool-1")
    assert (
        "server m-1 192.0.2.1:8080 weight 1 check inter 2s fall 3 rise 2 addr 192.0.2.99 port 9000" in backend
    )
    # Without a monitor there is no check to send elsewhere.
    assert "server m-1 192.0.2.1:8080 weight 1" in _section(
        _rendered(tmp_path, _tree(member=member)), "pool-1"
    )


def test_a_proxy_pool_speaks_the_proxy_protocol_to_its_members_and_in_its_checks(
    tmp_path: pathlib.Path,
) -> None:
    tree = _tree([{"protocol": "TCP"}], pool={"protocol": "PROXY"}, monitor={"type": "TCP"})
    backend = _section(_rendered(tmp_path, tree), "pool-1")
    assert "mode tcp" in backend
    assert (
        "server m-1 192.0.2.1:8080 weight 1 send-proxy check inter 2s fall 3 rise 2 check-send-proxy"
        in backend
    )


def test_a_terminated_https_listener_binds_with_its_checked_certificate(tmp_path: pathlib.Path) -> None:
    ca = trustme.CA()
    certificates = tmp_path / "certs"
    certificates.mkdir()
    ca.issue_cert("lb.example").private_key_and_cert_chain_pem.write_to_path(str(certificates / "lb.pem"))
    tree = _tree(
        [{"protocol": "TERMINATED_HTTPS", "protocol_port": 443, "default_tls_container_ref": "lb.pem"}]
    )
    haproxy_certificates.install(tree.typed(Loadbalancer), str(tmp_path), str(certificates))
    frontend = _section(_rendered(tmp_path, tree), "l-0")
    assert "mode http" in frontend
    assert f"bind 192.0.2.10:443 ssl crt {tmp_path}/tls/l-0.pem" in frontend
    assert (tmp_path / "tls" / "l-0.pem").stat().st_mode & 0o777 == 0o600
    # Gone with its listener.
    haproxy_certificates.install(_tree().typed(Loadbalancer), str(tmp_path), str(certificates))
    assert not list((tmp_path / "tls").iterdir())
