"""The one settings loader of the daemons: a frozen dataclass in, flags and `--help` out.

Each daemon declares its settings as a frozen dataclass whose fields are made with `setting()`,
so a field's default and its help text sit side by side. `load()` builds the command line from
those fields and fills each one from, in order:

1. its flag (`--listen-port 8080`; bools also take `--no-<flag>`);
2. its environment variable, `<env_prefix><FLAG NAME>` (`PAAS_ROUTER_LISTEN_PORT`), then any
   unprefixed variable the field names as a fallback (`DOCKER_HOST`); a variable that is set
   but empty counts as unset;
3. its default.

Types come from the annotations: `str`, `int`, `float` (finite), `bool` (`1/true/yes/on`,
`0/false/no/off`), `Path`, any of these `| None` (an empty value means None) and
`Mapping[str, str]` (a repeated `--flag k=v`, or `k=v,k2=v2` in the environment).

A bad value - not a number, not one of the choices, or refused by the dataclass's
`__post_init__` (raise `InvalidSetting(field, problem)` there) - ends the process with one line
on stderr that names the flag and the variable, and exit code 2, as argparse does for its own
errors. This module imports nothing first-party: it is part of the shared kernel.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""The choices of a daemon's `log_level` setting (Python's logging levels)."""

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class InvalidSetting(ValueError):
    """A setting has a bad value: `field` is the dataclass field, `problem` what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def setting(default: Any = dataclasses.MISSING, help: str = "", *,
            default_factory: Any = dataclasses.MISSING, shown_default: str | None = None,
            flag: str | None = None, env: str | None = None, also_env: Sequence[str] = (),
            choices: Sequence[str] = ()) -> Any:
    """A settings field: its default and help text, and how the command line names it.

    `flag` overrides the flag name (default: the field name with dashes); the environment
    variable follows the flag name unless `env` names it (after the prefix). `also_env` lists
    unprefixed variables read after the prefixed one. `choices` restricts a `str` (matched
    without regard to case; the value keeps the choice's spelling). `shown_default` is what
    `--help` says when the default is computed.
    """
    if not help:
        raise TypeError("every setting needs a help text")
    if (default is dataclasses.MISSING) == (default_factory is dataclasses.MISSING):
        raise TypeError("a setting needs exactly one of a default and a default_factory")
    metadata = {"help": help, "flag": flag, "env": env, "also_env": tuple(also_env),
                "choices": tuple(choices), "shown_default": shown_default}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def load(cls: type[T], *, prog: str, description: str, env_prefix: str,
         argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> T:
    """Settings from flags, then environment variables, then defaults; exit 2 on a bad value.

    `argv` defaults to `sys.argv[1:]` and `environ` to `os.environ`; `--help` prints the
    generated help and exits 0.
    """
    env = os.environ if environ is None else environ
    parser = build_parser(cls, prog=prog, description=description, env_prefix=env_prefix)
    given = vars(parser.parse_args(sys.argv[1:] if argv is None else list(argv)))
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in _settings_fields(cls):
        raw = given.get(f.name)
        if raw is None:
            raw = next((env[name] for name in env_names(f, env_prefix) if env.get(name)), None)
        if raw is None:
            continue
        try:
            values[f.name] = _convert(hints[f.name], raw, f.metadata["choices"])
        except ValueError as exc:
            fail(cls, InvalidSetting(f.name, str(exc)), prog=prog, env_prefix=env_prefix)
    try:
        return cls(**values)
    except InvalidSetting as exc:
        fail(cls, exc, prog=prog, env_prefix=env_prefix)
    except ValueError as exc:
        _exit_with(f"{prog}: {exc}")


def fail(cls: type, exc: InvalidSetting, *, prog: str, env_prefix: str) -> NoReturn:
    """Print one line naming the setting's flag and variable, and exit 2."""
    for f in _settings_fields(cls):
        if f.name == exc.field:
            where = f"--{flag_name(f)} (env {', '.join(env_names(f, env_prefix))})"
            break
    else:
        where = exc.field
    _exit_with(f"{prog}: {where}: {exc.problem}")


def build_parser(cls: type, *, prog: str, description: str,
                 env_prefix: str) -> argparse.ArgumentParser:
    """The command line of `cls`: one optional flag per field, help and default from the field."""
    example = _settings_fields(cls)[0]
    parser = _OneLineErrors(
        prog=prog, description=description, argument_default=argparse.SUPPRESS,
        epilog=f"Every flag can also be set in the environment as {env_prefix}<FLAG NAME> "
               f"(e.g. --{flag_name(example)} as {env_names(example, env_prefix)[0]}); "
               "a flag wins over the environment, and the environment over the default.")
    hints = typing.get_type_hints(cls)
    for f in _settings_fields(cls):
        kind, _ = _unwrap(hints[f.name])
        help_text = f.metadata["help"]
        if f.metadata["choices"]:
            help_text = f"{help_text} One of {', '.join(f.metadata['choices'])}."
        if kind is Mapping:
            help_text = f"{help_text} Repeat the flag for more; the variable takes k=v,k2=v2."
        help_text = (f"{help_text} (default: {_shown_default(f)}; "
                     f"env {', '.join(env_names(f, env_prefix))})")
        flag = "--" + flag_name(f)
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                help=help_text)
        elif kind is Mapping:
            parser.add_argument(flag, dest=f.name, action="append", metavar="K=V",
                                help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, metavar=flag_name(f).upper().replace("-", "_"),
                                help=help_text)
    return parser


def flag_name(f: dataclasses.Field[Any]) -> str:
    """The flag of a field, without its dashes: `listen-port`."""
    return f.metadata.get("flag") or f.name.replace("_", "-")


def env_names(f: dataclasses.Field[Any], env_prefix: str) -> list[str]:
    """The environment variables of a field, in the order they are read."""
    own = env_prefix + (f.metadata.get("env") or flag_name(f).upper().replace("-", "_"))
    return [own, *f.metadata.get("also_env", ())]


class _OneLineErrors(argparse.ArgumentParser):
    """argparse, but an error (unknown flag, missing value) is one line, not usage plus error."""

    def error(self, message: str) -> NoReturn:
        _exit_with(f"{self.prog}: {message} (see {self.prog} --help)")


def _exit_with(line: str) -> NoReturn:
    print(line, file=sys.stderr)
    raise SystemExit(2)


def _settings_fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.init)


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(the base kind, whether None is allowed) of an annotation; TypeError if unsupported."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported settings type {hint!r}")
        hint, optional = args[0], True
    if typing.get_origin(hint) in (dict, Mapping) and typing.get_args(hint) == (str, str):
        return Mapping, optional
    if hint in (str, int, float, bool, Path):
        return hint, optional
    raise TypeError(f"unsupported settings type {hint!r}")


def _convert(hint: Any, raw: str | bool | list[str], choices: Sequence[str]) -> Any:
    """A flag's or variable's raw value as the field's type; ValueError says what is wrong."""
    kind, optional = _unwrap(hint)
    if optional and raw == "":
        return None
    if kind is bool:
        return raw if isinstance(raw, bool) else _parse_bool(str(raw))
    if kind is Mapping:
        items = raw if isinstance(raw, list) else [p for p in str(raw).split(",") if p.strip()]
        return _parse_pairs(items)
    text = str(raw)
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
    if kind is float:
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{text!r} is not a finite number")
        return number
    if kind is Path:
        return Path(text)
    if choices:
        for choice in choices:
            if choice.lower() == text.lower():
                return choice
        raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
    return text


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a yes or no (use true or false)")


def _parse_pairs(items: Sequence[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.strip().partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not k=v")
        pairs[key] = value
    return pairs


def _shown_default(f: dataclasses.Field[Any]) -> str:
    if f.metadata.get("shown_default") is not None:
        return f.metadata["shown_default"]
    if f.default is dataclasses.MISSING:
        value = f.default_factory()  # type: ignore[misc]
    else:
        value = f.default
    if value is None or value == {}:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return '""'
    return str(value)
