"""Recipes: YAML files whose sections feed the stage dataclasses, with command-line overrides.

A recipe is either flat (keys of one stage's dataclasses) or sectioned by stage::

    extract:   {source: embedded:all-MiniLM-L6-v2, epsilon: 0.1, ...}
    pretrain:  {teacher: embedded:splade-tiny, ...}
    finetune:  {...}

`bortify extract --config recipes/demo.yaml --epsilon 0.3` reads the `extract` section and lets flags win
(the TrlParser convention: YAML values become argparse defaults).
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import types
import typing
from pathlib import Path
from typing import Any, Sequence

import yaml
from transformers import HfArgumentParser

from bortify.stages import SECTION_NAMES


class RecipeError(ValueError):
    """A recipe (or a stage's settings) is wrong; the message names the file, key and fix."""


class _AliasRefused(yaml.YAMLError):
    def __init__(self, kind: str, name: str, mark):
        super().__init__(kind)
        self.kind, self.name, self.mark = kind, name, mark


class RecipeLoader(yaml.SafeLoader):
    """yaml.SafeLoader without anchors and aliases (`&name` / `*name`, merge keys `<<: *name` included).

    An alias makes the document a graph: a 1 KB "billion laughs" file expands to 10^9 values when walked (the
    secret check, stage_section, the report record all walk it) and a self-referencing alias (`a: &a [*a]`) is a
    cycle that recursion never leaves. Recipes are short and flat, so both are refused at the first anchor or
    alias, before any value is built."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _AliasRefused("alias", f"*{event.anchor}", event.start_mark)
        if getattr(event, "anchor", None) is not None:
            raise _AliasRefused("anchor", f"&{event.anchor}", event.start_mark)
        return super().compose_node(parent, index)



def load_recipe(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"Recipe {str(path)!r} does not exist. Recipes ship under recipes/ (e.g. recipes/demo.yaml).")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=RecipeLoader) or {}
    except _AliasRefused as exc:
        raise RecipeError(f"Recipe {path} uses a YAML {exc.kind} ({exc.name}) at line {exc.mark.line + 1}, column "
                          f"{exc.mark.column + 1}: recipes do not allow anchors and aliases (`&name`, `*name`, "
                          "`<<: *name`), which can expand without bound. Write the values out in full there.") from None
    except yaml.YAMLError as exc:
        raise RecipeError(_yaml_error_text(path, exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"Cannot read recipe {path}: {exc}.") from None
    if not isinstance(data, dict):
        raise RecipeError(f"Recipe {path} must be a YAML mapping, got {type(data).__name__}.")
    check_no_secrets(data, str(path))
    return data


def _yaml_error_text(path: Path, exc: yaml.YAMLError) -> str:
    """'Recipe r.yaml is not valid YAML: line 3, column 2: expected <block end> ...' (1-based, as editors count)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return (f"Recipe {path} is not valid YAML{where}: {problem}" + (f" ({context})" if context else "")
            + ". Check the indentation (spaces, not tabs), quotes and brackets there.")


def check_no_secrets(recipe: Any, where: str) -> None:
    """Refuse Hub tokens in a recipe: recipes get copied, shared and written into run reports.

    The token comes from HF_TOKEN or `hf auth login` (or `bortify push --token` for a one-off). Checked when
    the recipe is loaded, so before any stage runs; the message never repeats the token.
    """
    from bortify.utils import SECRET_KEYS, TOKEN_PATTERN

    def visit(value: Any, trail: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                at = f"{trail}.{key}" if trail else str(key)
                if str(key).lower() in SECRET_KEYS and item not in (None, False, ""):
                    raise RecipeError(f"{where}: `{at}` holds a Hub token. Tokens do not belong in recipes (they end up "
                                      "in shared files and run reports): delete that key and set HF_TOKEN or run "
                                      "`hf auth login` instead.")
                visit(item, at)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                visit(item, f"{trail}[{i}]")
        elif isinstance(value, str) and TOKEN_PATTERN.search(value):
            raise RecipeError(f"{where}: `{trail}` holds what looks like a Hub token. Tokens do not belong in "
                              "recipes: remove it and set HF_TOKEN or run `hf auth login` instead.")

    visit(recipe, "")


def stage_section(recipe: dict[str, Any], stage: str, known_stages: Sequence[str] = SECTION_NAMES) -> dict[str, Any]:
    """The part of a recipe that belongs to `stage` (the whole recipe if it is flat)."""
    if stage in recipe:
        section = recipe[stage] or {}
        if not isinstance(section, dict):
            raise RecipeError(f"Recipe section {stage!r} must be a mapping.")
        return dict(section)
    if any(k in recipe for k in known_stages):
        return {}
    return {k: v for k, v in recipe.items() if k not in ("name", "description")}


# ---- value types: a recipe's YAML values against the dataclass field types ------------------------------

def _field_types(dataclass_types) -> dict[str, Any]:
    """Field name -> resolved type annotation (None where it cannot be resolved: not checked)."""
    out: dict[str, Any] = {}
    for dc in dataclass_types:
        try:
            hints = typing.get_type_hints(dc)
        except Exception:  # an annotation that does not resolve: leave those fields unchecked
            hints = {}
        for f in dataclasses.fields(dc):
            if f.init and f.name not in out:
                out[f.name] = hints.get(f.name)
    return out


def value_matches(tp: Any, value: Any) -> bool:
    """Whether a YAML value fits a dataclass field type (bool is not an int, an int is a float, a list must be a
    list; Enum fields take their values' strings; types this does not know are accepted)."""
    if tp is None or tp is Any:
        return True
    if tp is type(None):
        return value is None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(value_matches(a, value) for a in args)
    if origin is typing.Literal:
        return value in args
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        item = args[0] if args else None
        return all(value_matches(item, v) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return isinstance(value, tp) or value in {m.value for m in tp}
    return True  # a class this check does not know (e.g. accelerate's ParallelismConfig): left to the parser


def type_name(tp: Any) -> str:
    """'float', 'list of int', 'int or null', 'one of a, b' for messages."""
    if tp is type(None):
        return "null"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(type_name(a) for a in args))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (list, tuple, set, frozenset):
        return f"list of {type_name(args[0])}" if args else "list"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    return getattr(tp, "__name__", str(tp))


def _yaml_text(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"


def check_values(mapping: dict[str, Any], dataclass_types, where: str) -> None:
    """Raise RecipeError naming the key, the expected type and the value for every YAML value of the wrong type."""
    fields = _field_types(dataclass_types)
    problems = []
    for key, value in mapping.items():
        tp = fields.get(key)
        if key not in fields or value_matches(tp, value):
            continue
        hint = ""
        if isinstance(value, str) and _parses_as_number(value):
            hint = (" (quoted in the YAML, or a number YAML reads as text such as 5e-4: write it unquoted, "
                    "with a decimal point: 5.0e-4)")
        elif value is not None and not isinstance(value, (list, tuple)) and _expects_list(tp):
            hint = f" (write a YAML list, e.g. [{value!r}])"
        problems.append(f"`{key}` must be {type_name(tp)}, got {_yaml_text(value)}{hint}")
    if problems:
        raise RecipeError(f"Wrong value type(s) in {where}: " + "; ".join(problems) + ".")


def _expects_list(tp: Any) -> bool:
    return any(typing.get_origin(t) in (list, tuple) or t in (list, tuple) for t in (tp, *typing.get_args(tp)))


def _parses_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _field_names(dataclass_types) -> set[str]:
    return {f.name for dc in dataclass_types for f in dataclasses.fields(dc) if f.init}


def check_keys(mapping: dict[str, Any], dataclass_types, where: str) -> None:
    unknown = sorted(set(mapping) - _field_names(dataclass_types))
    if unknown:
        valid = ", ".join(sorted(_field_names(dataclass_types)))
        raise RecipeError(f"Unknown key(s) {unknown} in {where}. Valid keys: {valid}")


def check_required(mapping: dict[str, Any], dataclass_types, where: str) -> None:
    """Raise RecipeError naming each required setting (a field without a default) that `mapping` lacks, with its help."""
    missing = [f for dc in dataclass_types for f in dataclasses.fields(dc) if f.init and f.name not in mapping
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        needs = "; ".join(f"`{f.name}` ({f.metadata.get('help', 'required')})" for f in missing)
        raise RecipeError(f"{where} needs {needs}: set it in the recipe.")


def args_from_dict(dataclass_types, mapping: dict[str, Any], where: str = "recipe") -> tuple:
    """Build the stage dataclasses from a mapping (used by `bortify run`).

    Keys and value types are checked first; a dataclass that refuses its values (a ValueError or
    TypeError from its __post_init__) becomes a RecipeError naming `where`.
    """
    if not isinstance(mapping, dict):
        raise RecipeError(f"{where} must be a mapping of settings, got {type(mapping).__name__}.")
    check_keys(mapping, dataclass_types, where)
    check_values(mapping, dataclass_types, where)
    check_required(mapping, dataclass_types, where)
    parser = HfArgumentParser(dataclass_types)
    try:
        return parser.parse_dict(mapping, allow_extra_keys=False)
    except RecipeError:
        raise
    except (ValueError, TypeError) as exc:
        from bortify.utils import user_error_types

        if isinstance(exc, user_error_types()):
            raise
        raise RecipeError(f"{where}: {exc}") from exc


def parse_stage_args(
    dataclass_types,
    argv: Sequence[str] | None,
    *,
    stage: str,
    prog: str,
    description: str,
    known_stages: Sequence[str] = SECTION_NAMES,
) -> tuple:
    """Parse `--config recipe.yaml` plus flags into the stage dataclasses."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(dataclass_types, prog=prog, description=description)
    parser.add_argument(
        "--config",
        default=None,
        help=f"YAML recipe; its '{stage}' section (or the whole file, if flat) sets defaults that flags override.",
    )
    config_path = _find_config(argv)
    if config_path:
        section = stage_section(load_recipe(config_path), stage, known_stages)
        check_keys(section, dataclass_types, f"{config_path} [{stage}]")
        check_values(section, dataclass_types, f"{config_path} [{stage}]")
        parser.set_defaults(**section)
        for action in parser._actions:  # a value from the recipe satisfies a required flag
            if action.dest in section:
                action.required = False
    try:
        outputs = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as exc:  # a dataclass's __post_init__ refusing a value: the user's to fix, not a traceback
        from bortify.utils import user_error_types

        if isinstance(exc, user_error_types()):
            raise
        raise RecipeError(str(exc)) from exc
    return tuple(outputs[: len(dataclass_types)])  # the last output is the namespace holding --config


def _find_config(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None
