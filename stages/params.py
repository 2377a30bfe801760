"""Params handling for every command: ``--params`` files, their validation and named entries.

``teachclip --params params.yaml <command> ...`` fills every option's default from the section
of params.yaml named after the command path (``frames:``, ``teacher: {score: ...}``), so DVC stages
stay short and every value lives in params.yaml, while an explicit CLI option still wins.
Commands that take ``--name`` also read a named entry (``teachers.NAME``, ``baselines.NAME``,
``students.NAME``). ``paths:`` names every artifact once; options called ``--frames``,
``--manifest`` (and ``--clip`` of the training commands, ``--out`` of the single-output stages)
default to it.

The whole file is validated before any command runs: an unknown key anywhere, or a value of the
wrong type, is an ``Error:`` naming the file, the line, the key and the closest valid key,
because click would otherwise ignore a mistyped key and a multi-hour GPU run would start with
the wrong settings.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import click
import yaml
from click.core import ParameterSource

from pipeline.errors import InputError

#: Artifact paths of a pipeline (``paths:``), each written once.
PATH_KEYS = ("dataset", "frames", "clip", "teachers", "students", "metrics", "results")
DEFAULT_PATHS = {"dataset": "data/dataset", "frames": "data/frames.h5", "clip": "data/clip",
                 "teachers": "data/teachers", "students": "data/students",
                 "metrics": "data/metrics", "results": "data/results"}
#: Options that default to a ``paths`` entry in every command that has them.
PATH_OPTIONS = {"frames": "frames", "manifest": "dataset"}
#: Per-command options that default to a ``paths`` entry.
COMMAND_PATH_OPTIONS: dict[tuple[str, ...], dict[str, str]] = {
    ("data", "prepare"): {"out": "dataset"},
    ("data", "synth"): {"out": "dataset"},
    ("frames",): {"out": "frames"},
    ("clip", "prepare"): {"out": "clip"},
    ("clip", "pretrain"): {"out": "clip"},
    ("teacher", "train"): {"clip": "clip"},
    ("student", "train"): {"clip": "clip"},
}
#: Named-entry tables: table -> (command whose options an entry may set, extra keys allowed).
TABLES: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "teachers": (("teacher", "train"), frozenset({"score"})),
    "baselines": (("student", "train"), frozenset()),
    "students": (("student", "train"), frozenset({"teachers"})),
}
#: Options whose params value may be a mapping or a list although the CLI takes a string.
STRUCTURED = frozenset({"options", "loss_weights"})


def _underscore_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k).replace("-", "_"): _underscore_keys(v) for k, v in value.items()}
    return value


def load_params(path: str | Path, root: click.Group | None = None) -> dict[str, Any]:
    """Read a params YAML file into a nested dict (dashes in keys become underscores) and, given
    the command tree ``root``, validate every key and value (InputError naming file and line)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("params file not found (pass an existing --params file)", file=path)
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {exc}", file=path) from None
    if not isinstance(data, dict):
        raise InputError("top level must be a mapping of sections", file=path)
    params = _underscore_keys(data)
    if root is not None:
        problems = validate_params(params, root)
        if problems:
            key, message = problems[0]
            more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
            raise InputError(f"{key}: {message}{more}", file=path, line=_line_of(text, key))
    return params


def paths_of(params: Mapping[str, Any]) -> dict[str, str]:
    """``paths:`` with the defaults for keys it leaves out."""
    return {**DEFAULT_PATHS, **{k: str(v) for k, v in (params.get("paths") or {}).items()}}


def _suggest(key: str, valid: Iterable[str]) -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key; {hint}valid keys: {', '.join(valid)}"


def option_keys(command: click.Command) -> dict[str, click.Parameter]:
    """Params-file keys of a command (option names with underscores, and parameter names)."""
    keys: dict[str, click.Parameter] = {}
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        for opt in param.opts:
            keys[opt.lstrip("-").replace("-", "_")] = param
        if param.name:
            keys[param.name] = param
    return keys


def _type_problem(param: click.Parameter, value: Any, key: str) -> str | None:
    """Why ``value`` cannot be this option's value, or None (paths are not checked for
    existence: earlier stages create them)."""
    if value is None:
        return None
    values = value if param.multiple or (param.nargs or 1) > 1 else [value]
    if (param.multiple or (param.nargs or 1) > 1) and not isinstance(value, list):
        return f"expected a list, got {value!r}"
    if isinstance(value, (dict, list)) and key not in STRUCTURED and not param.multiple:
        return f"expected a single {param.type.name} value, got {value!r}"
    kind = param.type
    for item in values:
        if isinstance(kind, click.Path) or isinstance(item, (dict, list)):
            continue
        if kind is click.STRING and not isinstance(item, (str, int, float)):
            return f"expected text, got {item!r}"
        if isinstance(kind, click.types.BoolParamType) and not isinstance(item, bool):
            return f"expected true or false, got {item!r}"
        try:
            kind.convert(item, param, None)
        except click.BadParameter as exc:
            return exc.format_message()
    return None


def _section_problems(command: click.Command, section: Any, where: str,
                      extra: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    if not isinstance(section, dict):
        return [(where, f"expected a mapping of options, got {section!r}")]
    if isinstance(command, click.Group):
        subs = {name.replace("-", "_"): sub for name, sub in command.commands.items()}
        out = []
        for key, value in section.items():
            if key not in subs:
                out.append((f"{where}.{key}", _suggest(key, subs)))
            else:
                out += _section_problems(subs[key], value, f"{where}.{key}")
        return out
    keys = option_keys(command)
    out = []
    for key, value in section.items():
        if key in extra:
            continue
        if key not in keys:
            out.append((f"{where}.{key}", _suggest(key, set(keys) | extra)))
            continue
        problem = _type_problem(keys[key], value, key)
        if problem:
            out.append((f"{where}.{key}", problem))
    return out


def _command_at(root: click.Group, path: tuple[str, ...]) -> click.Command:
    command: click.Command = root
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def validate_params(params: Mapping[str, Any], root: click.Group) -> list[tuple[str, str]]:
    """Every (dotted key, problem) in a params file; empty when it is valid."""
    top = {name.replace("-", "_"): cmd for name, cmd in root.commands.items()}
    problems: list[tuple[str, str]] = []
    for key, value in params.items():
        if key == "paths":
            if not isinstance(value, dict):
                problems.append(("paths", "expected a mapping of artifact paths"))
                continue
            problems += [(f"paths.{k}", _suggest(k, PATH_KEYS)) for k in value
                         if k not in PATH_KEYS]
        elif key in TABLES:
            problems += _table_problems(root, key, value)
        elif key in top:
            problems += _section_problems(top[key], value, key)
        else:
            problems.append((key, _suggest(key, set(top) | set(TABLES) | {"paths"})))
    return problems


def _table_problems(root: click.Group, table: str, entries: Any) -> list[tuple[str, str]]:
    """``teachers.NAME`` / ``baselines.NAME`` / ``students.NAME`` entries."""
    if entries is None:
        return []
    if not isinstance(entries, dict):
        return [(table, "expected a mapping of NAME: {options}")]
    path, extra = TABLES[table]
    command = _command_at(root, path)
    problems = []
    for name, entry in entries.items():
        where = f"{table}.{name}"
        problems += _section_problems(command, entry or {}, where, extra)
        entry = entry or {}
        if table == "teachers" and "score" in entry:
            problems += _section_problems(_command_at(root, ("teacher", "score")),
                                          entry["score"], f"{where}.score")
        if table == "students":
            teachers = entry.get("teachers")
            if not isinstance(teachers, list) or not teachers:
                problems.append((f"{where}.teachers", "a student needs a list of teacher "
                                 "names (a run without teacher belongs under baselines:)"))
    return problems


def _line_of(text: str, dotted: str) -> int | None:
    """1-based line of a dotted key in a YAML text (None when it cannot be found)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    for part in dotted.split("."):
        if not isinstance(node, yaml.MappingNode):
            return None
        for key_node, value_node in node.value:
            if str(key_node.value).replace("-", "_") == part:
                found = key_node
                node = value_node
                break
        else:
            return None
    return found.start_mark.line + 1


def defaults_for(command: click.Command, section: dict[str, Any],
                 paths: Mapping[str, str] | None = None,
                 path: tuple[str, ...] = ()) -> dict[str, Any]:
    """Translate a params section into click's ``default_map`` for ``command``.

    YAML keys are option names (``out``, ``batch_size``); click looks defaults up by parameter
    name, which differs when an option names its destination (``--out`` → ``out_dir``). Sub-
    sections of groups are translated recursively. ``paths`` fills the options named in
    :data:`PATH_OPTIONS` / :data:`COMMAND_PATH_OPTIONS` that the section leaves out.
    """
    out = dict(section)
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            key = name.replace("-", "_")
            value = section.get(key)
            sub_section = value if isinstance(value, dict) else {}
            out[key] = defaults_for(sub, sub_section, paths, (*path, name))
            if key != name:
                out[name] = out[key]
        return out
    if paths is not None:
        keys = option_keys(command)
        fill = {**{k: v for k, v in PATH_OPTIONS.items() if k in keys},
                **COMMAND_PATH_OPTIONS.get(path, {})}
        for option, path_key in fill.items():
            out.setdefault(option, paths[path_key])
    for param in command.params:
        for opt in getattr(param, "opts", []):
            key = opt.lstrip("-").replace("-", "_")
            if key in out and param.name is not None and key != param.name:
                out[param.name] = out[key]
    return out


def named_entry(ctx: click.Context, table: str, name: str | None) -> dict[str, Any]:
    """``params[table][name]`` (empty without ``--params`` or ``--name``); an unknown name is an
    error when the table exists, naming the known ones."""
    if not name:
        return {}
    root = ctx.find_root().obj or {}
    entries = (root.get("params") or {}).get(table) or {}
    if name not in entries:
        if entries:
            raise InputError(f"no {table}.{name} in params (known: {sorted(entries)})")
        return {}
    return dict(entries[name] or {})


def apply_entry(ctx: click.Context, entry: dict[str, Any], values: dict[str, Any], where: str,
                ignore: Iterable[str] = ()) -> None:
    """Fill options not given on the command line from ``entry``; unknown keys are errors.

    ``ignore``: keys of the entry that belong to other commands or to dvc.yaml templating.
    """
    unknown = sorted(set(entry) - set(values) - set(ignore))
    if unknown:
        raise InputError(f"{where}: unknown option(s) {unknown} (known: {sorted(values)})")
    for key, value in entry.items():
        if key in values and ctx.get_parameter_source(key) != ParameterSource.COMMANDLINE:
            values[key] = value


def root_params(ctx: click.Context) -> dict[str, Any]:
    """The validated params of this invocation (empty without ``--params``)."""
    return dict((ctx.find_root().obj or {}).get("params") or {})


def resolved_options(ctx: click.Context, command: click.Command, path: tuple[str, ...],
                     args: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    """The values ``command`` would run with from the params section at ``path`` (plus
    ``overrides``): lets one stage command run another with the other's own section."""
    default_map: Any = ctx.find_root().default_map or {}
    for name in path:
        default_map = (default_map or {}).get(name, {})
    sub = command.make_context(path[-1], list(args or []),
                               default_map={**(default_map or {}), **overrides})
    return dict(sub.params)


def teacher_cache_path(params: Mapping[str, Any], name: str) -> str:
    """Where ``teacher score --name NAME`` publishes its cache file."""
    return f"{paths_of(params)['teachers']}/{name}/cache/cache.h5"


def report_specs(params: Mapping[str, Any]) -> list[str]:
    """``NAME=metrics.json`` for every teacher, baseline and student the params define."""
    paths = paths_of(params)
    specs = [f"teacher_{name}={paths['teachers']}/{name}/cache/metrics.json"
             for name in params.get("teachers") or {}]
    for table in ("baselines", "students"):
        prefix = "student_" if table == "students" else ""
        specs += [f"{prefix}{name}={paths['metrics']}/{name}.json"
                  for name in params.get(table) or {}]
    return specs
