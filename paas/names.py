"""Validation of the names users choose: checked at the API edge and wherever a name meets a
path, a container name, a Consul key or a template."""

from __future__ import annotations

import re

APP_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
NEW_APP_NAME_RE = re.compile(r"^[a-z](?:[a-z0-9-]{0,28}[a-z0-9])?$")
"""A new app's name is one DNS label: it also cannot end in '-'. (Apps named before this rule
keep their names: lookups take APP_NAME_RE.)"""
RESERVED_PREFIX = "paas-"
"""New apps may not take it: `paas.selfregister` names the platform's own services so."""
PROCESS_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,29}$")
NODE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")
INSTANCE_ID_RE = re.compile(r"^[a-z][a-z0-9-]{0,29}-v[0-9]+-[a-z][a-z0-9_-]{0,29}-[0-9a-f]{6}$")


class InvalidName(ValueError):
    """A name that breaks the naming rules; the message is one sentence for the user."""


def validate_app_name(name: object) -> str:
    """Return `name` if it is a valid app name (one DNS label), else raise InvalidName."""
    if not isinstance(name, str) or not APP_NAME_RE.fullmatch(name):
        shown = name if isinstance(name, str) and len(name) <= 40 else "that name"
        raise InvalidName(
            f"invalid app name {shown!r}: use 1-30 characters, lowercase letters, digits "
            "and '-', starting with a letter"
        )
    return name


def validate_new_app_name(name: object) -> str:
    """Return `name` if a new app may take it (a DNS label), else raise InvalidName."""
    validate_app_name(name)
    assert isinstance(name, str)
    if not NEW_APP_NAME_RE.fullmatch(name):
        raise InvalidName(f"invalid app name {name!r}: it must not end with '-', since "
                          f"{name}.<domain> would not be a valid host name")
    if name.startswith(RESERVED_PREFIX):
        raise InvalidName(f"invalid app name {name!r}: names starting with "
                          f"'{RESERVED_PREFIX}' are the platform's own (its daemons' Consul "
                          "services)")
    return name


def validate_process_name(name: object) -> str:
    """Return `name` if it is a valid process type name (web, worker, ...), else raise."""
    if not isinstance(name, str) or not PROCESS_NAME_RE.fullmatch(name):
        raise InvalidName(
            "invalid process type name: use 1-30 characters, lowercase letters, digits, "
            "'-' and '_', starting with a letter"
        )
    return name


def validate_instance_id(value: object) -> str:
    """Return `value` if it is a well-formed instance id, else raise InvalidName."""
    if not isinstance(value, str) or not INSTANCE_ID_RE.fullmatch(value):
        raise InvalidName("invalid instance id")
    return value


def validate_node_name(name: object) -> str:
    """Return `name` if it is a valid node name (a lowercase host name), else raise."""
    if not isinstance(name, str) or not NODE_NAME_RE.fullmatch(name):
        raise InvalidName("invalid node name: use 1-63 lowercase letters, digits, '.' and '-'")
    return name


def consul_node_name(cluster: str, node: str) -> str:
    """The name a node's Consul agent runs under (paas.machines starts it so; the controller's
    placements name it for the router, which matches it against the catalog)."""
    return f"{cluster}-{node}"
