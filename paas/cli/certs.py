"""The `certs` verb: what each of an app's host names is served with over HTTPS, and when its
certificate expires; add the app's own certificate, or remove it.

    paas certs APP                                  each host name, its certificate, expiry
    paas certs add APP --cert FILE --key FILE       serve the user's pair for the app's domains
    paas certs remove APP                           stop serving it
    paas certs renew APP                            renew now (cluster CA; ACME CA's too)
    paas certs https APP [--redirect on|off] [--hsts on|off]
                                                    redirect plain HTTP to HTTPS; send HSTS
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from paas.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    app_name,
    client,
    emit,
    remote_flags,
    table,
)
from paas.tlscerts import covers

ACTIONS = ("add", "remove", "https", "renew")
SWITCH = {"on": True, "off": False}


def served_with(hostnames: list[str], certs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One row per host name: the certificate that covers it, or none (HTTP only)."""
    rows = []
    for host in hostnames:
        cert = next((c for c in certs if any(covers(n, host) for n in c["hostnames"])), None)
        rows.append({"host": host,
                     "certificate": f"{cert['kind']} ({cert['source']})" if cert
                     else "none: HTTP only",
                     "expires": f"{cert['not_after'][:10]} (in {cert['expires_in_days']:g} days)"
                     if cert else "-"})
    return rows


def acme_line(acme: dict[str, Any] | None) -> str:
    """What the ACME CA's orders for the app are doing, if anything."""
    if not acme:
        return ""
    if acme["ordering"]:
        return "\nACME: ordering a certificate for the app's own domains"
    if acme["error"]:
        return f"\nACME: {acme['error']}; next try in {acme['next_try_in_s']} s"
    return ""


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the {what} file {path}: "
                       f"{getattr(exc, 'strerror', None) or exc}", code=EXIT_USAGE) from None


def cmd_certs(args: argparse.Namespace) -> int:
    action, app = ((args.first, args.second) if args.first in ACTIONS
                   else ("list", args.first if args.second is None else None))
    if app is None:
        raise CliError("name one app: paas certs APP, paas certs add APP --cert FILE --key "
                       "FILE, paas certs remove APP, or paas certs https APP", code=EXIT_USAGE)
    app = app_name(app)
    api = client(args)
    if action == "add":
        if not args.cert or not args.key:
            raise CliError("paas certs add needs --cert FILE and --key FILE", code=EXIT_USAGE)
        added = api.post(f"/v1/apps/{app}/certs", {"cert": _read(args.cert, "certificate"),
                                                   "key": _read(args.key, "key")})["cert"]
        emit(args, added, lambda: f"{app} now serves its own certificate for "
             f"{', '.join(added['hostnames'])} (expires {added['not_after'][:10]})")
        return EXIT_OK
    if action == "https":
        body = {k: SWITCH[v] for k, v in (("redirect", args.redirect), ("hsts", args.hsts))
                if v is not None}
        if not body:
            raise CliError("paas certs https needs --redirect on|off and/or --hsts on|off",
                           code=EXIT_USAGE)
        view = api.request("PUT", f"/v1/apps/{app}/https", json_body=body)["app"]
        emit(args, view, lambda: f"{app}: redirect to HTTPS "
             f"{'on' if view['https']['redirect'] else 'off'}, HSTS "
             f"{'on' if view['https']['hsts'] else 'off'}")
        return EXIT_OK
    if action == "renew":
        result = api.post(f"/v1/apps/{app}/certs/renew", {})
        emit(args, result, lambda: f"{app}'s certificates renewed:\n" + table(
            [{"kind": c["kind"], "source": c["source"], "hosts": " ".join(c["hostnames"]),
              "expires": c["not_after"][:10]} for c in result["certs"]],
            ["kind", "source", "hosts", "expires"]))
        return EXIT_OK
    if action == "remove":
        result = api.delete(f"/v1/apps/{app}/certs/own")
        emit(args, result, lambda: f"{app}'s own certificate is no longer served")
        return EXIT_OK
    view = api.get(f"/v1/apps/{app}")["app"]
    found = api.get(f"/v1/apps/{app}/certs")
    certs, acme = found["certs"], found.get("acme")
    https = view.get("https") or {}
    emit(args, found, lambda: table(served_with(view["hostnames"], certs),
                                    ["host", "certificate", "expires"])
         + f"\nredirect to HTTPS {'on' if https.get('redirect') else 'off'}, "
           f"HSTS {'on' if https.get('hsts') else 'off'}" + acme_line(acme))
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("certs", parents=[remote_flags()],
                       help="what each of an app's host names is served with over HTTPS and "
                            "when it expires; add or remove the app's own certificate",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first", metavar="APP|add|remove|https|renew", nargs="?")
    p.add_argument("second", metavar="APP", nargs="?")
    p.add_argument("--cert", metavar="FILE",
                   help="add: the certificate, PEM, the server's first and then its chain")
    p.add_argument("--key", metavar="FILE", help="add: its private key, PEM, unencrypted")
    p.add_argument("--redirect", choices=SWITCH,
                   help="https: redirect the app's plain HTTP requests to HTTPS (308)")
    p.add_argument("--hsts", choices=SWITCH,
                   help="https: send Strict-Transport-Security (a year) on HTTPS answers")
    p.set_defaults(func=cmd_certs)
