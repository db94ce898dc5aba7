"""How the command line reads, derived from the parser itself so that every flag, present
and future, gets the same treatment:

- ``--help`` shows value-like metavars (``--max-batch-wait-ms MS``, from the flag's name
  where none is given) and each setting's real default (``shown_default``);
- every flag can also be given as an environment variable, ``CLIPSERVE_`` + the flag in
  capitals (``--max-batch-wait-ms`` -> ``CLIPSERVE_MAX_BATCH_WAIT_MS``; switches take
  1/0, true/false, yes/no, on/off), the way container platforms configure services.

The flags themselves are declared in ``cli.py``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

ENV_PREFIX = "CLIPSERVE_"
#: settings that do not come from ``CLIPSERVE_<FLAG>``: ``CLIPSERVE_CACHE_DIR`` already
#: names clipserve's own cache (``models.cache``), while ``--cache-dir`` also moves the
#: Hugging Face hub cache; reading one as the other would move a user's downloaded models
NOT_FROM_ENV = frozenset({"cache_dir"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
#: metavars by the end of a flag's name, for flags declared without one
_SUFFIX_METAVARS = (
    ("-ms", "MS"),
    ("-s", "SECONDS"),
    ("-mb", "MB"),
    ("-port", "PORT"),
    ("-dir", "DIR"),
    ("-file", "FILE"),
    ("-hosts", "HOSTS"),
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Wider columns, value-like metavars, each action's ``shown_default``; descriptions
    and epilogs keep their line breaks."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=36, width=100)

    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        return derived_metavar(action)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        shown = getattr(action, "shown_default", None)
        if shown is None or "default" in help_text or action.help == argparse.SUPPRESS:
            return action.help
        value = shown() if callable(shown) else shown
        escaped = str(value).replace("%", "%%")  # argparse %-formats help strings
        return f"{help_text} (default: {escaped})".strip()


def derived_metavar(action: argparse.Action) -> str:
    name = long_option(action).lstrip("-")
    for suffix, metavar in _SUFFIX_METAVARS:
        if name.endswith(suffix):
            return metavar
    if action.type is int:
        return "N"
    if action.type is float:
        return "NUMBER"
    return name.rsplit("-", 1)[-1].upper() or action.dest.upper()


def long_option(action: argparse.Action) -> str:
    """The action's first ``--flag`` that is not a ``--no-`` form."""
    for option in action.option_strings:
        if option.startswith("--") and not option.startswith("--no-"):
            return option
    return action.option_strings[0] if action.option_strings else action.dest


def show_defaults(
    parser: argparse.ArgumentParser, defaults: Mapping[str, Any | Callable[[], Any]]
) -> None:
    """Give the first action of each ``dest`` in ``defaults`` (not ``--protect-x`` after
    ``--open-x``) a ``shown_default``: a value, or a callable evaluated only when help is
    printed. Help that already says its default keeps its own words."""
    seen: set[str] = set()
    for action in parser._actions:
        first = action.dest not in seen
        seen.add(action.dest)
        if first and action.dest in defaults and getattr(action, "shown_default", None) is None:
            value = defaults[action.dest]
            action.shown_default = value if callable(value) else describe(value)  # type: ignore[attr-defined]


def describe(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list | frozenset | set):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def env_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """``CLIPSERVE_<FLAG>`` -> its action: one variable per setting (``dest``), named after
    the first flag that sets it (``--open-health``, not ``--protect-health``)."""
    named: dict[str, argparse.Action] = {}
    seen: set[str] = set()
    for action in parser._actions:
        if not action.option_strings or action.dest in seen or action.dest in NOT_FROM_ENV:
            continue
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        seen.add(action.dest)
        named[env_name(action)] = action
    return named


def env_name(action: argparse.Action) -> str:
    return ENV_PREFIX + long_option(action).lstrip("-").upper().replace("-", "_")


def from_environment(
    parser: argparse.ArgumentParser, environ: Mapping[str, str]
) -> dict[str, Any]:
    """The settings given as ``CLIPSERVE_*`` variables, by ``dest``, converted and checked
    as the flags would be. ``ValueError`` names the variable of a bad value."""
    values: dict[str, Any] = {}
    for name, action in env_actions(parser).items():
        raw = environ.get(name)
        if raw is None or (raw.strip() == "" and action.nargs != 0):
            continue
        value = _convert(action, raw.strip(), name)
        if value is not _UNSET:
            values[action.dest] = value
    return values


_UNSET = object()


def _convert(action: argparse.Action, raw: str, name: str) -> Any:
    if isinstance(action, argparse.BooleanOptionalAction):
        return _switch(raw, name)
    if action.nargs == 0:  # store_true / store_false / store_const
        if _switch(raw, name):
            return action.const
        return (not action.const) if isinstance(action.const, bool) else _UNSET
    if action.nargs in ("+", "*"):
        return [_one(action, part, name) for part in _split(raw)]
    return _one(action, raw, name)


def _one(action: argparse.Action, raw: str, name: str) -> Any:
    convert = action.type if callable(action.type) else None
    try:
        value = convert(raw) if convert else raw
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        kind = getattr(convert, "__name__", "value")
        raise ValueError(f"{name}={raw!r} is not a valid {kind} ({exc})") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ValueError(f"{name}={raw!r}: must be one of {choices}")
    return value


def _switch(raw: str, name: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE or lowered == "":
        return False
    raise ValueError(f"{name}={raw!r}: use 1/0, true/false, yes/no or on/off")


def _split(raw: str) -> Iterable[str]:
    return [part for part in raw.replace(",", " ").split() if part]
