"""``numbat.toml`` -> one validated :class:`Config` object; every error names the key path.

Each part of numbat owns one section (``[emitter]`` now; ``[collector]``, ``[analyzer]``
and ``[dashboard]`` as those parts land). An unknown key, a wrong type or a value out of
range raises :class:`~numbat.errors.ConfigError` whose message starts with the dotted
path of the key, e.g. ``emitter.max_retries: expected an integer, got a string``.

>>> cfg = loads('[emitter]\\nuri = "udp://127.0.0.1:3333"\\napp = "web"\\n')
>>> cfg.emitter.uri, cfg.emitter.max_retries
('udp://127.0.0.1:3333', 100)
"""

from __future__ import annotations

import re
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

import msgspec

from numbat.emitter import DEFAULT_MAX_BACKLOG_BYTES, SCHEMES
from numbat.errors import ConfigError


class Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every config section: unknown keys are errors."""


class EmitterConfig(Section):
    """``[emitter]``: where ``numbat emit`` (and numbat's own daemons) send events."""

    uri: str = "tcp://127.0.0.1:3333"
    app: str = "numbat"
    node: str | None = None
    max_backlog: int | None = None
    max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES
    max_retries: int = 100

    def __post_init__(self) -> None:
        # Parse the scheme exactly as the emitter's make_transport does, so that a uri
        # `numbat check` accepts (e.g. not a bare "tcp") is one the emitter can use.
        try:
            scheme = urlsplit(self.uri).scheme.lower()
        except ValueError as exc:
            raise ValueError(f"uri: {exc}") from None
        if scheme not in SCHEMES:
            allowed = ", ".join(f"{s}:" for s in SCHEMES)
            raise ValueError(
                f"uri: unsupported scheme {scheme!r} in {self.uri!r}; allowed: {allowed}"
            )
        if not self.app:
            raise ValueError("app: must not be empty")
        _positive(self, "max_backlog", "max_backlog_bytes")
        if self.max_retries < 0:
            raise ValueError("max_retries: must be 0 or more")


class Config(Section):
    """The whole ``numbat.toml``."""

    emitter: EmitterConfig = msgspec.field(default_factory=EmitterConfig)


def load(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return loads(text, source=str(path))


def loads(text: str, *, source: str = "<config>") -> Config:
    """Validate TOML text; ``source`` prefixes error messages."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return from_dict(raw, source=source)


def from_dict(raw: dict[str, Any], *, source: str = "<config>") -> Config:
    """Validate an already-parsed mapping."""
    try:
        return msgspec.convert(raw, Config, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_explain(str(exc))}") from None


def _positive(section: Section, *names: str) -> None:
    for name in names:
        val = getattr(section, name)
        if val is not None and val <= 0:
            raise ValueError(f"{name}: must be a positive integer, got {val}")


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]*)`")
_ENUM = re.compile(r"Invalid enum value (?P<got>.*)")
_TYPE = re.compile(r"Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`")
_OWN = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*): (?P<msg>.*)$", re.S)


def _explain(error: str) -> str:
    """Turn a msgspec message into ``key.path: what is wrong; what is allowed``."""
    match = _AT.match(error)
    assert match is not None  # the pattern matches any string
    msg, path = match["msg"], (match["path"] or "").lstrip(".")
    if m := _UNKNOWN.match(msg):
        allowed = ", ".join(_fields_at(path)) or "none"
        return f"{_join(path, m['key'])}: unknown key; allowed keys: {allowed}"
    if m := _ENUM.match(msg):
        choices = ", ".join(repr(c) for c in _choices_at(path))
        return f"{path}: got {m['got']}; allowed values: {choices}"
    if m := _TYPE.match(msg):
        return f"{path}: expected {_noun(m['want'])}, got {_noun(m['got'])}"
    if m := _OWN.match(msg):
        return f"{_join(path, m['key'])}: {m['msg']}"
    return f"{path or '(top level)'}: {msg}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _noun(kind: str) -> str:
    nouns = {
        "int": "an integer",
        "str": "a string",
        "float": "a number",
        "bool": "a boolean",
        "object": "a table",
        "array": "an array",
        "null": "nothing",
    }
    parts = [nouns.get(k.strip(), k.strip()) for k in kind.split("|")]
    return " or ".join(parts)


def _type_at(path: str) -> Any:
    kind: Any = Config
    for part in re.findall(r"[^.\[\]]+", path):
        kind = _unwrap(kind)
        kind = get_args(kind)[0] if part.isdigit() else typing.get_type_hints(kind)[part]
    return _unwrap(kind)


def _unwrap(kind: Any) -> Any:
    """``X | None`` -> ``X``."""
    args = [a for a in get_args(kind) if a is not type(None)]
    if get_origin(kind) in (typing.Union, type(int | None)) and len(args) == 1:
        return args[0]
    return kind


def _fields_at(path: str) -> tuple[str, ...]:
    kind = _type_at(path)
    return tuple(getattr(kind, "__struct_fields__", ()))


def _choices_at(path: str) -> tuple[Any, ...]:
    kind = _type_at(path)
    return get_args(kind) if get_origin(kind) is Literal else ()
