"""One way for every command to read its configuration: dataclasses, from flags and from `--config file.yaml`.

Each knob is a field of exactly one config dataclass (its one name, one default, its help text). A command parses the
dataclasses it composes with `transformers.HfArgumentParser` (flags in either spelling, `--max-turns` or
`--max_turns`), and the YAML file may be flat or nested by section, mini-swe-agent style::

    tasks: embedded
    worker: {max_turns: 5, max_inflight: 2}
    episode: {agent_wall_time_s: 120}
    sandbox: {backend: docker, mem_limit: 4g}   # `backend` selects; the rest configures that backend
    agent: {name: pi}

Precedence: flag > config file > preset > the field's default. An unknown key in the file is an error naming it.

A dataclass with fields argparse cannot read (a nested object, a dict) or with fields another parser owns (TRL's
`temperature`, ...) is exposed through `cli_view(...)`: a dataclass with only the readable, unowned fields, whose
values `build(...)` turns back into the real config.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

# Sections whose mapping selects an implementation by one key and configures it with the rest.
SELECTOR_SECTIONS = {"sandbox": "backend", "agent": "name"}


class ConfigFileError(ValueError):
    """The config file cannot be read or names a key no command option has."""


def _readable(tp: Any) -> bool:
    """Whether argparse (through HfArgumentParser) can read a field of this type from a flag."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return len(args) == 1 and _readable(args[0])
    if origin is Literal:
        return True
    if origin is list:
        (item,) = typing.get_args(tp) or (str,)
        return item in (str, int, float)
    return tp in (str, int, float, bool) or (isinstance(tp, type) and issubclass(tp, enum.Enum))


def cli_view(cls: type, *, exclude: typing.Iterable[str] = (), group: str | None = None) -> type:
    """A dataclass of `cls`'s flag-readable fields minus `exclude`, same names, types, defaults and help."""
    hints = typing.get_type_hints(cls)
    excluded = set(exclude)
    specs = []
    for f in dataclasses.fields(cls):
        if f.name in excluded or not f.init or not _readable(hints[f.name]):
            continue
        default = (dataclasses.field(default=f.default, metadata=f.metadata) if f.default is not dataclasses.MISSING
                   else dataclasses.field(default_factory=f.default_factory, metadata=f.metadata))
        specs.append((f.name, hints[f.name], default))
    view = dataclasses.make_dataclass(f"{cls.__name__}Options", specs)
    view._argument_group_name = group or getattr(cls, "_argument_group_name", cls.__name__)
    view.__doc__ = f"The command-line view of `{cls.__module__}.{cls.__name__}`."
    return view


def build(cls: type, view: Any, **overrides: Any) -> Any:
    """The real `cls` config from a `cli_view` instance, with `overrides` for the fields the view left out."""
    return cls(**{**dataclasses.asdict(view), **overrides})


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config and flatten its sections; selector sections become `<section>` + `<section>_options`."""
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigFileError(f"config file {path} does not exist") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigFileError(f"config file {path} is not readable YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigFileError(f"config file {path} must hold a mapping of option names, not a {type(loaded).__name__}")
    flat: dict[str, Any] = {}
    for key, value in loaded.items():
        if key in SELECTOR_SECTIONS and isinstance(value, dict):
            options = dict(value)
            selector = SELECTOR_SECTIONS[key]
            if selector in options:
                flat[key] = options.pop(selector)
            flat[f"{key}_options"] = options
        elif isinstance(value, dict):  # a section: its keys are option names
            flat.update(value)
        else:
            flat[key] = value
    return flat


def split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    """(`--config` value or None, argv without it)."""
    rest, path = [], None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise ConfigFileError("--config needs a file path")
            path, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return path, rest


def parse_config_tree(parser: Any, argv: list[str], *, defaults: dict[str, Any] | None = None,
                      extra_keys: typing.Iterable[str] = ()) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Parse `argv` (with an optional `--config FILE`) into the parser's dataclasses.

    `defaults` (e.g. a preset) sit under the file, which sits under flags. Keys of the file that are not options but
    are named in `extra_keys` (e.g. `sandbox_options`) are returned in the second value instead of being parsed.
    """
    path, rest = split_config_flag(argv)
    values = dict(defaults or {})
    extras: dict[str, Any] = {}
    if path is not None:
        known = {f.name for dtype in parser.dataclass_types for f in dataclasses.fields(dtype)}
        for key, value in load_config_file(path).items():
            if key in extra_keys:
                extras[key] = value
            elif key in known:
                values[key] = value
            else:
                raise ConfigFileError(f"config file {path}: unknown option {key!r}")
    if values:
        parser.set_defaults(**values)
    return tuple(parser.parse_args_into_dataclasses(args=rest)), extras
