"""One way for every command to read its configuration: dataclasses, from flags and from `--config file.yaml`.

Each knob is a field of exactly one config dataclass (its one name, one default, its help text). A command parses the
dataclasses it composes with `transformers.HfArgumentParser` (flags in either spelling, `--max-turns` or
`--max_turns`), and the YAML file may be flat or nested by section, mini-swe-agent style::

    tasks: embedded
    worker: {max_turns: 5, max_inflight: 2}
    episode: {agent_wall_time_s: 120}
    sandbox: {backend: docker, mem_limit: 4g}   # `backend` selects; the rest configures that backend
    agent: {name: pi}

Precedence: flag > config file > preset > the field's default. Each section fills only its own dataclass (named by the
class attribute `_config_section`); an unknown key, an unknown section or a key in another dataclass's section is an
error naming the key and the section. Top-level keys may name any option (flat style).

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

from intercept_common.cli_errors import squash
from intercept_common.errors import ConfigError

# Sections whose mapping selects an implementation by one key and configures it with the rest: the key is an option
# (`sandbox`), the rest goes to `<section>_options`.
SELECTOR_SECTIONS = {"sandbox": "backend", "agent": "name"}


class ConfigFileError(ConfigError):
    """The config file cannot be read, or names a key or a section no option of the command has."""


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
    """A dataclass of `cls`'s flag-readable fields minus `exclude`, same names, types, defaults and help.

    The view validates as `cls` does: constructing it constructs a `cls` from its values (the excluded fields at their
    defaults), so a value `cls` rejects fails while the command parses its options, before it starts anything. It
    keeps `cls`'s YAML section (`_config_section`).
    """
    hints = typing.get_type_hints(cls)
    excluded = set(exclude)
    specs = []
    for f in dataclasses.fields(cls):
        if f.name in excluded or not f.init or not _readable(hints[f.name]):
            continue
        default = (dataclasses.field(default=f.default, metadata=f.metadata) if f.default is not dataclasses.MISSING
                   else dataclasses.field(default_factory=f.default_factory, metadata=f.metadata))
        specs.append((f.name, hints[f.name], default))

    def __post_init__(self) -> None:
        cls(**dataclasses.asdict(self))

    view = dataclasses.make_dataclass(f"{cls.__name__}Options", specs, namespace={"__post_init__": __post_init__})
    view._argument_group_name = group or getattr(cls, "_argument_group_name", cls.__name__)
    view._config_section = getattr(cls, "_config_section", None)
    view.__doc__ = f"The command-line view of `{cls.__module__}.{cls.__name__}`."
    return view


def build(cls: type, view: Any, **overrides: Any) -> Any:
    """The real `cls` config from a `cli_view` instance, with `overrides` for the fields the view left out."""
    return cls(**{**dataclasses.asdict(view), **overrides})


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The YAML mapping of a config file, as written (sections unflattened); a clear error if it is not one."""
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
    return loaded


def config_sections(dataclass_types: typing.Iterable[type]) -> tuple[set[str], dict[str, set[str]]]:
    """(every option name, {section: the option names of its dataclass}) of the dataclasses a command parses.

    A dataclass names its YAML section with the class attribute `_config_section` (e.g. `worker`); one without it
    (the command's own arguments, TRL's config) is read from top-level keys only.
    """
    known: set[str] = set()
    sections: dict[str, set[str]] = {}
    for dtype in dataclass_types:
        names = {f.name for f in dataclasses.fields(dtype)}
        known |= names
        section = getattr(dtype, "_config_section", None)
        if section:
            sections.setdefault(section, set()).update(names)
    return known, sections


def _owner(key: str, sections: dict[str, set[str]]) -> str:
    owners = [name for name, keys in sections.items() if key in keys]
    return f"section {owners[0]!r}" if owners else "the top level (no section)"


def flatten_config(path: str | Path, loaded: dict[str, Any], known: set[str], sections: dict[str, set[str]],
                   extra_keys: typing.Iterable[str] = ()) -> dict[str, Any]:
    """The options of a loaded config file, each section checked against its own dataclass.

    A top-level key is any option (flat style) or a section; a section's keys must be options of that section's
    dataclass; a selector section (`sandbox: {backend: docker, ...}`) gives its selector option and
    `<section>_options` (allowed when named in `extra_keys`). Anything else is a `ConfigFileError` naming the key and
    the section.
    """
    extras = set(extra_keys)
    listed = ", ".join(sorted({*sections, *(s for s in SELECTOR_SECTIONS if s in known)})) or "none"
    flat: dict[str, Any] = {}
    for key, value in loaded.items():
        key = str(key)
        selector = SELECTOR_SECTIONS.get(key)
        if selector is not None and key in known and isinstance(value, dict) and f"{key}_options" in extras:
            options = dict(value)
            if selector in options:
                flat[key] = options.pop(selector)
            flat[f"{key}_options"] = options
        elif key in sections:
            if not isinstance(value, dict):
                raise ConfigFileError(f"config file {path}: section {key!r} must hold a mapping of its options, not "
                                      f"a {type(value).__name__}")
            for inner, inner_value in value.items():
                inner = str(inner)
                if inner in sections[key]:
                    flat[inner] = inner_value
                elif inner in known:
                    raise ConfigFileError(f"config file {path}: option {inner!r} does not belong in section {key!r}; "
                                          f"it belongs in {_owner(inner, sections)}")
                else:
                    raise ConfigFileError(f"config file {path}: unknown option {inner!r} in section {key!r}")
        elif key in known or key in extras:
            flat[key] = value
        elif isinstance(value, dict):
            inner = ", ".join(repr(str(k)) for k in list(value)[:3])
            raise ConfigFileError(f"config file {path}: unknown section {key!r} (holding {inner or 'nothing'}); "
                                  f"sections: {listed}")
        else:
            raise ConfigFileError(f"config file {path}: unknown option {key!r} at the top level")
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
    Every rejection (an unknown or misplaced key, a flag argparse refuses, a value a dataclass's validation refuses)
    is a one-line `ConfigError`, raised before the command starts anything.
    """
    path, rest = split_config_flag(argv)
    values = dict(defaults or {})
    extras: dict[str, Any] = {}
    if path is not None:
        known, sections = config_sections(parser.dataclass_types)
        flat = flatten_config(path, load_config_file(path), known, sections, extra_keys)
        for key, value in flat.items():
            (extras if key in extra_keys else values)[key] = value
    if values:
        parser.set_defaults(**values)
        for action in parser._actions:  # a required option the file gives is not required on the command line too
            if action.dest in values:
                action.required = False
    prog = getattr(parser, "prog", "intercept-rl")

    def refuse(message: str):  # argparse's error(): one line instead of the usage block and SystemExit(2)
        raise ConfigError(f"{message} (see `{prog} --help`)")

    parser.error = refuse
    try:
        return tuple(parser.parse_args_into_dataclasses(args=rest)), extras
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # a dataclass's validation (or HfArgumentParser's leftover-flags check)
        raise ConfigError(squash(str(exc))) from exc
