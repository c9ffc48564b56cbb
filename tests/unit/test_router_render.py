"""Unit tests of the router's pure parts: config rendering, value validation, the runtime-vs-reload
plan, the runtime commands, Consul payload parsing, `show proc` parsing and settings."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from paas.names import InvalidName
from paas.consul import HealthEntry, Service
from router.main import main as router_main
from router.plan import Backend, SlotChange, ordered_changes, plan_changes, runtime_commands, slots_needed
from router.render import RenderOptions, render_config
from router.routes import (
    AppRoute,
    InvalidRoute,
    RouteSpec,
    Server,
    build_table,
    parse_passing_servers,
    parse_routes,
    validate_hostname,
)
from router.runtime_api import RuntimeApiError, check_set_server_reply, parse_show_proc
from router.settings import RouterSettings

OPTIONS = RenderOptions(listen_host="127.0.5.1", listen_port=18080,
                        admin_socket=Path("/tmp/paas-router-test/admin.sock"), maxconn=4000)

A1, A2, A3, A4 = (Server("127.0.0.2", 32768), Server("127.0.0.3", 32769),
                  Server("127.0.0.2", 32770), Server("127.0.0.4", 32771))


def route(app: str, hostnames: tuple[str, ...], *servers: Server) -> AppRoute:
    return AppRoute(app=app, hostnames=hostnames, servers=tuple(sorted(servers)))


def render(table: dict[str, AppRoute], initial_slots: int = 4) -> str:
    layout = plan_changes({}, table, initial_slots=initial_slots).layout
    return render_config(layout, OPTIONS)


def lines(config: str) -> list[str]:
    return [line.strip() for line in config.splitlines()]


# --- rendering ---------------------------------------------------------------------------

def test_hostnames_map_to_their_backend() -> None:
    config = lines(render({
        "hello": route("hello", ("hello.localhost", "www.hello.test"), A1),
        "api": route("api", ("api.localhost",), A2),
    }))
    assert "acl host_hello var(txn.host) -m str hello.localhost" in config
    assert "acl host_hello var(txn.host) -m str www.hello.test" in config
    assert "acl host_api var(txn.host) -m str api.localhost" in config
    assert "use_backend app_hello if host_hello" in config
    assert "use_backend app_api if host_api" in config
    assert "backend app_hello" in config and "backend app_api" in config
    assert "http-request set-var(txn.host) req.hdr(host),field(1,:),lower" in config
    assert "bind 127.0.5.1:18080" in config
    assert "default_backend no_app" in config


@pytest.mark.parametrize(("servers", "initial", "expected_slots", "expected_active"), [
    ((), 4, 4, []),
    ((A1,), 4, 4, ["server s1 127.0.0.2:32768"]),
    ((A1, A2), 1, 2, ["server s1 127.0.0.2:32768", "server s2 127.0.0.3:32769"]),
    ((A1, A2, A3), 2, 4, ["server s1 127.0.0.2:32768", "server s2 127.0.0.2:32770",
                          "server s3 127.0.0.3:32769"]),
])
def test_backend_has_fixed_slots_and_disabled_spares(servers, initial, expected_slots,
                                                     expected_active) -> None:
    config = lines(render({"hello": route("hello", ("hello.localhost",), *servers)}, initial))
    server_lines = [line for line in config if line.startswith("server ")]
    assert len(server_lines) == expected_slots
    assert [line for line in server_lines if "disabled" not in line] == expected_active
    spares = [line for line in server_lines if "disabled" in line]
    assert len(spares) == expected_slots - len(expected_active)
    assert all(line.endswith("0.0.0.0:1 disabled") for line in spares)
    # Consul decides health: HAProxy must not run checks of its own.
    assert not any(" check" in line for line in server_lines)


def test_unknown_host_gets_a_404_page_and_empty_app_a_503_page() -> None:
    config = render({"hello": route("hello", ("hello.localhost",))})
    no_app = config.split("backend no_app", 1)[1].split("backend app_", 1)[0]
    assert 'http-request return status 404 content-type "text/html; charset=utf-8" string' in no_app
    assert "No app is routed for this host name" in no_app
    app = config.split("backend app_hello", 1)[1]
    assert 'http-error status 503 content-type "text/html; charset=utf-8" string' in app
    # nbsrv is briefly 0 while a reload starts a worker: a rule on it would fail good requests.
    assert not any("nbsrv" in line for line in lines(config) if not line.startswith("#"))


def test_global_and_defaults() -> None:
    config = lines(render({}))
    assert "stats socket /tmp/paas-router-test/admin.sock mode 600 level admin expose-fd listeners" in config
    assert "maxconn 4000" in config
    for line in ("timeout connect 2s", "timeout client 30s", "timeout server 30s",
                 "option redispatch 1", "retries 3", "http-reuse safe",
                 "retry-on conn-failure empty-response junk-response",
                 "http-request disable-l7-retry unless METH_GET || METH_HEAD || METH_OPTIONS"):
        assert line in config
    assert not any("http-server-close" in line for line in config)  # keep-alive to servers


def test_app_without_hostnames_gets_no_use_backend() -> None:
    config = lines(render({"hello": route("hello", (), A1)}))
    assert "backend app_hello" in config
    assert not any(line.startswith("use_backend app_hello") for line in config)


@pytest.mark.docker  # runs the HAProxy binary: not in the quick suite
@pytest.mark.skipif(shutil.which("haproxy", path="/usr/sbin:/usr/bin") is None,
                    reason="haproxy not installed")
def test_rendered_config_passes_haproxy_check(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render({
        "hello": route("hello", ("hello.localhost", "hello.example.com"), A1, A2),
        "a-b-1": route("a-b-1", ("a-b-1.localhost",)),
    }))
    haproxy = shutil.which("haproxy", path="/usr/sbin:/usr/bin")
    result = subprocess.run([haproxy, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


# --- validation of every value that reaches the template ----------------------------------

@pytest.mark.parametrize("app", ["Hello", "1app", "a" * 31, "he llo", "hello\nbackend x", "", "a_b"])
def test_invalid_app_name_rejected(app: str) -> None:
    with pytest.raises(InvalidName):
        AppRoute(app=app, hostnames=(), servers=())
    forged = Backend(app=app, hostnames=(), slots=(None,))
    with pytest.raises(InvalidName):
        render_config({"x": forged}, OPTIONS)


@pytest.mark.parametrize("hostname", [
    "Hello.localhost", "hello.localhost:80", "hello .localhost", "hello.localhost\n server x",
    "hello.localhost.", "hel_lo.localhost", "a..b", "-a.b", "a-.b", "a" * 64 + ".b", "",
    "*.example.com", "hello.localhost if TRUE",
])
def test_invalid_hostname_rejected(hostname: str) -> None:
    with pytest.raises(InvalidRoute):
        validate_hostname(hostname)
    forged = Backend(app="hello", hostnames=(hostname,), slots=(None,))
    with pytest.raises(InvalidRoute):
        render_config({"hello": forged}, OPTIONS)


@pytest.mark.parametrize(("host", "port"), [
    ("localhost", 80), ("1.2.3", 80), ("::1", 80), ("127.0.0.1 check", 80), ("01.2.3.4", 80),
    ("127.0.0.1", 0), ("127.0.0.1", 70000), ("127.0.0.1", "80"), ("127.0.0.1", True),
])
def test_invalid_server_rejected(host, port) -> None:
    with pytest.raises(InvalidRoute):
        Server(host, port)


def test_forged_server_in_slot_rejected() -> None:
    bad = Server("127.0.0.1", 80)
    object.__setattr__(bad, "host", "127.0.0.1:80 check\n")
    with pytest.raises(InvalidRoute):
        render_config({"hello": Backend(app="hello", hostnames=(), slots=(bad,))}, OPTIONS)


@pytest.mark.parametrize("options", [
    dataclasses.replace(OPTIONS, listen_host="0.0.0.0:80"),
    dataclasses.replace(OPTIONS, listen_port=0),
    dataclasses.replace(OPTIONS, admin_socket=Path("/tmp/a b/admin.sock")),
    dataclasses.replace(OPTIONS, maxconn=0),
])
def test_invalid_render_options_rejected(options: RenderOptions) -> None:
    with pytest.raises(InvalidRoute):
        render_config({}, options)


# --- the decision: runtime update or reload ------------------------------------------------

H = ("hello.localhost",)


def layout_of(*backends: Backend) -> dict[str, Backend]:
    return {b.app: b for b in backends}


PLAN_CASES = [
    # (name, current layout, desired table, reload?, expected slots of hello after)
    ("nothing changes", layout_of(Backend("hello", H, (A1, None))),
     {"hello": route("hello", H, A1)}, False, (A1, None)),
    ("first app appears", {}, {"hello": route("hello", H, A1)}, True, (A1, None)),
    ("app removed", layout_of(Backend("hello", H, (A1, None)), Backend("old", ("old.localhost",), (None, None))),
     {"hello": route("hello", H, A1)}, True, (A1, None)),
    ("hostname added", layout_of(Backend("hello", H, (A1, None))),
     {"hello": route("hello", H + ("www.hello.test",), A1)}, True, (A1, None)),
    ("instance added fits a slot", layout_of(Backend("hello", H, (A1, None))),
     {"hello": route("hello", H, A1, A2)}, False, (A1, A2)),
    ("instance removed empties its slot", layout_of(Backend("hello", H, (A1, A2))),
     {"hello": route("hello", H, A2)}, False, (None, A2)),
    ("instance replaced in place", layout_of(Backend("hello", H, (A1, A2))),
     {"hello": route("hello", H, A2, A3)}, False, (A3, A2)),
    ("new instance prefers a slot that was already empty", layout_of(Backend("hello", H, (A1, None, A2, None))),
     {"hello": route("hello", H, A2, A3)}, False, (None, A3, A2, None)),
    ("last instance gone: runtime, backend empty", layout_of(Backend("hello", H, (A1, None))),
     {"hello": route("hello", H)}, False, (None, None)),
    ("more instances than slots: slots double, reload", layout_of(Backend("hello", H, (A1, A2))),
     {"hello": route("hello", H, A1, A2, A3)}, True, (A1, A2, A3, None)),
    ("shrinking keeps the slots", layout_of(Backend("hello", H, (A1, A2, A3, A4))),
     {"hello": route("hello", H, A4)}, False, (None, None, None, A4)),
]


@pytest.mark.parametrize(("current", "desired", "reload", "slots"),
                         [case[1:] for case in PLAN_CASES], ids=[case[0] for case in PLAN_CASES])
def test_plan_runtime_or_reload(current, desired, reload, slots) -> None:
    plan = plan_changes(current, desired, initial_slots=2)
    assert plan.reload is reload
    assert plan.layout["hello"].slots == slots
    assert set(plan.layout) == set(desired)
    if reload:
        assert plan.changes == () and plan.reasons
    else:
        old = current["hello"].slots
        expected = {(i + 1, s) for i, s in enumerate(slots) if s != old[i]}
        assert {(c.slot, c.server) for c in plan.changes} == expected
    # Applying the plan again changes nothing: the loop is idempotent.
    assert plan_changes(plan.layout, desired, initial_slots=2).noop


def test_plan_reload_carries_instances_of_other_apps() -> None:
    current = layout_of(Backend("hello", H, (A1, None)))
    desired = {"hello": route("hello", H, A1, A2), "new": route("new", ("new.localhost",), A3)}
    plan = plan_changes(current, desired, initial_slots=2)
    assert plan.reload and plan.changes == ()
    assert plan.layout["hello"].slots == (A1, A2)
    assert plan.layout["new"].slots == (A3, None)
    assert "apps added: new" in plan.summary()


@pytest.mark.parametrize(("count", "initial", "size"), [(0, 8, 8), (8, 8, 8), (9, 8, 16),
                                                         (33, 8, 64), (3, 1, 4)])
def test_slots_needed_doubles(count: int, initial: int, size: int) -> None:
    assert slots_needed(count, initial) == size


@pytest.mark.parametrize(("change", "commands"), [
    (SlotChange("hello", 3, A1, None),
     ["set server app_hello/s3 addr 127.0.0.2 port 32768", "set server app_hello/s3 state ready"]),
    (SlotChange("hello", 1, None, A1), ["set server app_hello/s1 state maint"]),
    (SlotChange("hello", 2, A2, A1),
     ["set server app_hello/s2 state maint", "set server app_hello/s2 addr 127.0.0.3 port 32769",
      "set server app_hello/s2 state ready"]),
])
def test_runtime_commands(change: SlotChange, commands: list[str]) -> None:
    assert runtime_commands(change) == commands


def test_changes_fill_before_they_empty() -> None:
    remove = SlotChange("hello", 1, None, A1)
    swap = SlotChange("hello", 2, A3, A2)
    add = SlotChange("hello", 3, A4, None)
    assert ordered_changes((remove, swap, add)) == [add, swap, remove]


@pytest.mark.parametrize(("reply", "ok"), [
    ("\n", True),
    ("IP changed from '0.0.0.0' to '127.0.0.2', port changed from '1' to '32768' by 'stats socket command'\n\n", True),
    ("no need to change the addr, no need to change the port by 'stats socket command'\n\n", True),
    ("No such server.\n\n", False),
    ("Require 'backend/server'.\n\n", False),
    ("Permission denied\n\n", False),
])
def test_set_server_replies(reply: str, ok: bool) -> None:
    if ok:
        check_set_server_reply("set server x/s1 state ready", reply)
    else:
        with pytest.raises(RuntimeApiError):
            check_set_server_reply("set server x/s1 state ready", reply)


def test_parse_show_proc() -> None:
    text = ("#<PID>          <type>          <reloads>       <uptime>        <version>\n"
            "15758           master          2 [failed: 1]   0d00h00m10s     2.6.12\n"
            "# workers\n16037           worker          0               0d00h00m01s     2.6.12\n"
            "# old workers\n15761           worker          1               0d00h00m09s     2.6.12\n"
            "# programs\n\n")
    table = parse_show_proc(text)
    assert (table.master_pid, table.reloads, table.failed_reloads) == (15758, 2, 1)
    assert table.workers == (16037,) and table.old_workers == (15761,)


# --- Consul payloads ---------------------------------------------------------------------

def kv(key: str, value: object) -> tuple[str, bytes]:
    raw = value if isinstance(value, str) else json.dumps(value)
    return key, raw.encode()


def test_parse_routes_skips_bad_entries() -> None:
    warnings: list[str] = []
    specs = parse_routes(dict([
        kv("paas/routes/hello", {"app": "hello", "service": "hello", "hostnames": ["Hello.Localhost"]}),
        kv("paas/routes/api", {"app": "api", "hostnames": ["api.localhost", "api.example.com"]}),
        kv("paas/routes/Bad", {"app": "Bad", "hostnames": ["bad.localhost"]}),
        kv("paas/routes/evil", {"app": "evil", "hostnames": ["evil.localhost\n server x"]}),
        kv("paas/routes/other", {"app": "someone-else", "hostnames": []}),
        kv("paas/routes/junk", "not json"),
        ("paas/routes/", b""),
        kv("paas/routes/deep/key", {"app": "deep"}),
        ("paas/routes/latin1", b'{"app": "latin1", "hostnames": ["\xe9.localhost"]}'),
    ]), "paas/routes/", warn=warnings.append)
    assert specs == {
        "hello": RouteSpec("hello", "hello", ("hello.localhost",)),
        "api": RouteSpec("api", "api", ("api.localhost", "api.example.com")),
    }
    assert len(warnings) == 5
    assert parse_routes({}, "paas/routes/") == {}


def health_entry(address: str, port: int, tags: list[str], status: str = "passing") -> HealthEntry:
    return HealthEntry(Service(id=f"x-{port}", name="hello", address=address, port=port,
                               tags=tuple(tags)), status=status)


def test_parse_passing_servers_routes_only_live_web() -> None:
    servers = parse_passing_servers([
        health_entry("127.0.0.2", 32768, ["live", "v1", "web"]),
        health_entry("127.0.0.3", 32769, ["live", "v1", "web", "stable"]),
        health_entry("127.0.0.2", 32770, ["control", "v2", "web"]),
        health_entry("127.0.0.2", 32771, ["live", "v1", "worker"]),
        health_entry("127.0.0.2", 32772, ["live", "v1", "web"], status="critical"),
        health_entry("127.0.0.2", 32773, ["live", "v1", "web"], status="warning"),
        health_entry("not-an-ip", 32774, ["live", "v1", "web"]),
    ], "hello", warn=lambda message: None)
    assert servers == (Server("127.0.0.2", 32768), Server("127.0.0.3", 32769))


def test_build_table_gives_a_contested_hostname_to_one_app() -> None:
    specs = {"a": RouteSpec("a", "a", ("shared.localhost", "a.localhost")),
             "b": RouteSpec("b", "b", ("shared.localhost", "b.localhost")),
             "c": RouteSpec("c", "c", ("c.localhost",))}
    table = build_table(specs, {"a": (A1,), "b": (A2, A2)})
    assert table == {"a": route("a", ("a.localhost", "shared.localhost"), A1),
                     "b": route("b", ("b.localhost",), A2)}  # c: no health answer yet


# --- settings -----------------------------------------------------------------------------

def test_settings_defaults_flags_env_precedence() -> None:
    assert RouterSettings.from_args([], {}) == RouterSettings()
    settings = RouterSettings.from_args(
        ["--listen-port", "18080", "--state-dir", "/tmp/r1"],
        {"PAAS_ROUTER_LISTEN_PORT": "9999", "PAAS_ROUTER_CONSUL_URL": "http://127.0.5.1:8500/",
         "PAAS_ROUTER_INITIAL_SLOTS": "2", "PAAS_ROUTER_LOG_LEVEL": "debug"},
    )
    assert settings.listen_port == 18080
    assert settings.consul_url == "http://127.0.5.1:8500"
    assert settings.initial_slots == 2
    assert settings.admin_socket == Path("/tmp/r1/admin.sock")
    assert settings.maxconn == 4000
    assert settings.log_level == "DEBUG"
    assert settings.templates_dir is None
    assert RouterSettings.from_args(["--templates-dir", "/tmp/t"], {}).templates_dir == Path(
        "/tmp/t")


@pytest.mark.parametrize("argv, message", [
    (["--listen-port", "x"], "--listen-port (env PAAS_ROUTER_LISTEN_PORT): 'x' is not a whole"),
    (["--listen-host", "localhost"], "--listen-host (env PAAS_ROUTER_LISTEN_HOST): must be an"),
    (["--admin-port", "70000"], "--admin-port (env PAAS_ROUTER_ADMIN_PORT): must be a port"),
    (["--initial-slots", "0"], "--initial-slots (env PAAS_ROUTER_INITIAL_SLOTS): must be at"),
    (["--routes-prefix", "paas/routes"], "--routes-prefix (env PAAS_ROUTER_ROUTES_PREFIX)"),
    (["--consul-wait-s", "0"], "--consul-wait-s (env PAAS_ROUTER_CONSUL_WAIT_S): must be more"),
    (["--debounce-s", "-1"], "--debounce-s (env PAAS_ROUTER_DEBOUNCE_S): must not be negative"),
    (["--state-dir", "/tmp/" + "d" * 100], "--state-dir (env PAAS_ROUTER_STATE_DIR): '/tmp/d"),
    (["--log-level", "loud"], "--log-level (env PAAS_ROUTER_LOG_LEVEL): 'loud' is not one of"),
])
def test_settings_reject_bad_values(argv: list[str], message: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        RouterSettings.from_args(argv, {})
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"paas-router: {message}") and err.count("\n") == 1, err


def test_every_setting_has_a_flag_and_help(capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "10000")  # one line per flag: argparse wraps at hyphens
    with pytest.raises(SystemExit):
        RouterSettings.from_args(["--help"], {})
    help_text = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(RouterSettings):
        flag = "--" + field.name.replace("_", "-")
        usage = (f"{flag}, --no-{flag[2:]}" if field.type in (bool, "bool")
                 else f"{flag} {field.name.upper()}")
        assert f"{usage} {field.metadata['help']}" in help_text, field.name
        assert f"env PAAS_ROUTER_{field.name.upper()})" in help_text, field.name


def test_a_bad_consul_url_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        router_main(["--consul-url", "consul:8500"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("paas-router: --consul-url (env PAAS_ROUTER_CONSUL_URL): Consul URL "
                          "'consul:8500'") and "Traceback" not in err


def test_an_operators_templates_dir_replaces_the_packaged_template(tmp_path: Path) -> None:
    packaged = render({"hello": route("hello", ("hello.localhost",), A1)})
    (tmp_path / "haproxy.cfg.j2").write_text("# mine\nmaxconn {{ maxconn }}\n")
    layout = plan_changes({}, {"hello": route("hello", ("hello.localhost",), A1)},
                          initial_slots=4).layout
    assert render_config(layout, OPTIONS, templates_dir=tmp_path) == "# mine\nmaxconn 4000\n"
    assert "backend app_hello" in packaged


SHOW_STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,addr,cookie
main,FRONTEND,,,4,10,,,0,0,,
app_shop,s1,0,0,3,5,,9,0,0,127.0.0.2:32768,
app_shop,s2,0,0,0,1,,2,0,0,127.0.0.3:32769,
app_shop,s3,0,0,0,0,,0,0,0,,
app_shop,BACKEND,0,0,3,5,,11,0,0,,
stats,s1,0,0,1,1,,1,0,0,127.0.0.9:1,
"""


def test_sessions_come_per_app_and_server_address_from_show_stat() -> None:
    from router.runtime_api import parse_sessions

    assert parse_sessions(SHOW_STAT) == {"shop": {"127.0.0.2:32768": 3, "127.0.0.3:32769": 0}}
    assert parse_sessions("") == {} and parse_sessions("no header\n") == {}
    assert parse_sessions("# pxname,svname\napp_x,s1\n") == {}  # no scur, no addr column


# --- HTTPS (issue 12) ----------------------------------------------------------------------

@pytest.mark.docker
def test_https_bind_with_fallback_and_crt_list_passes_haproxy_check(tmp_path: Path) -> None:
    from paas.tlscerts import self_signed

    cert, key = self_signed(["paas-router.invalid"])
    (tmp_path / "fallback.pem").write_text(cert + key)
    (tmp_path / "certs.list").write_text("")
    options = dataclasses.replace(OPTIONS, https_port=18443,
                                  fallback_cert=tmp_path / "fallback.pem",
                                  crt_list=tmp_path / "certs.list")
    layout = plan_changes({}, {"hello": route("hello", ("hello.localhost",), A1)},
                          initial_slots=2).layout
    config = render_config(layout, options)
    assert (f"bind 127.0.5.1:18443 ssl crt {tmp_path}/fallback.pem crt-list "
            f"{tmp_path}/certs.list alpn h2,http/1.1") in lines(config)
    assert "bind 127.0.5.1:18080" in lines(config)  # plain HTTP stays
    (tmp_path / "haproxy.cfg").write_text(config)
    haproxy = shutil.which("haproxy", path="/usr/sbin:/usr/bin")
    result = subprocess.run([haproxy, "-c", "-q", "-f", str(tmp_path / "haproxy.cfg")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ssl crt" not in render_config(layout, OPTIONS)  # no https_port: no HTTPS


def test_https_needs_its_files_and_a_seal_key() -> None:
    with pytest.raises(InvalidRoute, match="HTTPS needs a fallback certificate and a crt-list"):
        render_config({}, dataclasses.replace(OPTIONS, https_port=18443))
    from paas.settings import InvalidSetting

    with pytest.raises(InvalidSetting, match="seal_key_file: is needed with https_port"):
        RouterSettings(https_port=8443)


async def test_a_payload_with_an_empty_line_is_refused_before_anything_is_sent() -> None:
    from router.runtime_api import send_command

    with pytest.raises(RuntimeApiError, match="holds an empty line"):
        await send_command(Path("/nonexistent.sock"), "set ssl cert /x.pem",
                           payload="-----BEGIN-----\n\nabc\n")


def test_certificates_from_kv_open_with_the_seal_key_and_bad_ones_are_skipped(
        tmp_path: Path) -> None:
    from paas.sealing import Sealer, create_key_file
    from paas.tlscerts import issue, make_ca
    from router.certs import parse_certs

    ca_cert, ca_key = make_ca("test CA")
    cert, key = issue(ca_cert, ca_key, ["hello.localhost"])
    create_key_file(tmp_path / "seal.key")
    create_key_file(tmp_path / "other.key")
    sealer = Sealer.from_file(tmp_path / "seal.key")
    good = json.dumps({"cert": cert, "key": sealer.seal(key.encode())}).encode()
    warnings: list[str] = []
    found = parse_certs({
        "paas/certs/hello/platform": good,
        "paas/certs/Bad_Name/platform": good,
        "paas/certs/hello": good,  # no kind
        "paas/certs/other/platform": json.dumps({"cert": cert, "key": Sealer.from_file(
            tmp_path / "other.key").seal(key.encode())}).encode(),
        "paas/certs/nocert/own": json.dumps({"cert": "x", "key": "y"}).encode(),
        "paas/certs/notjson/own": b"{",
    }, "paas/certs/", sealer, warnings.append)
    assert list(found) == ["hello.platform"]
    bundle = found["hello.platform"].bundle
    assert bundle.startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE KEY" in bundle
    assert "\n\n" not in bundle and len(found["hello.platform"].sha1) == 40
    assert len(warnings) == 5 and all(w.startswith("certificate 'paas/certs/") for w in warnings)
    assert any("does not open with this cluster's seal key" in w for w in warnings)


def test_https_policy_is_parsed_and_a_change_of_it_reloads() -> None:
    from router.routes import HttpsPolicy

    warnings: list[str] = []
    specs = parse_routes({
        "paas/routes/a": json.dumps({"hostnames": ["a.localhost"],
                                     "https": {"redirect": True, "hsts": True}}).encode(),
        "paas/routes/b": json.dumps({"hostnames": ["b.localhost"]}).encode(),
        "paas/routes/c": json.dumps({"hostnames": ["c.localhost"],
                                     "https": {"redirect": "yes"}}).encode(),
    }, "paas/routes/", warn=warnings.append)
    assert specs["a"].https == HttpsPolicy(redirect=True, hsts=True)
    assert specs["b"].https == HttpsPolicy()
    assert "c" not in specs and "https is not an object of redirect and hsts" in warnings[0]
    table = build_table(specs, {"a": [A1], "b": [A2]})
    first = plan_changes({}, table, initial_slots=2).layout
    same = plan_changes(first, table, initial_slots=2)
    assert same.noop
    flipped = {**table, "a": dataclasses.replace(table["a"], https=HttpsPolicy(redirect=True))}
    plan = plan_changes(first, flipped, initial_slots=2)
    assert plan.reload and plan.reasons == ("https of a: redirect True, hsts False",)


def test_redirect_and_hsts_are_rendered_only_with_https(tmp_path: Path) -> None:
    from router.routes import HttpsPolicy

    route_a = dataclasses.replace(route("a", ("a.localhost",), A1),
                                  https=HttpsPolicy(redirect=True, hsts=True))
    layout = plan_changes({}, {"a": route_a}, initial_slots=2).layout
    options = dataclasses.replace(OPTIONS, https_port=8443, fallback_cert=tmp_path / "f.pem",
                                  crt_list=tmp_path / "c.list")
    found = lines(render_config(layout, options))
    assert ("http-request redirect code 308 location https://%[var(txn.host)]:8443"
            "%[capture.req.uri] if host_a !{ ssl_fc } "
            "!{ path_beg /.well-known/acme-challenge/ }") in found
    assert ('http-response set-header Strict-Transport-Security "max-age=31536000" '
            "if { ssl_fc }") in found
    on_443 = render_config(layout, dataclasses.replace(options, https_port=443))
    assert "location https://%[var(txn.host)]%[capture.req.uri]" in on_443
    plain = render_config(layout, OPTIONS)
    assert "redirect" not in plain and "Strict-Transport-Security" not in plain
