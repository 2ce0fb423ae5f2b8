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
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml
from transformers import HfArgumentParser


class RecipeError(ValueError):
    pass


# The stage sections a recipe may have, in pipeline order (bortify.pipeline.STAGES follows this list).
STAGE_NAMES = ("extract", "pretrain", "finetune", "compress", "card", "push")


def load_recipe(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"Recipe {str(path)!r} does not exist. Recipes ship under recipes/ (e.g. recipes/demo.yaml).")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise RecipeError(f"Recipe {path} must be a YAML mapping, got {type(data).__name__}.")
    return data


def stage_section(recipe: dict[str, Any], stage: str, known_stages: Sequence[str] = STAGE_NAMES) -> dict[str, Any]:
    """The part of a recipe that belongs to `stage` (the whole recipe if it is flat)."""
    if stage in recipe:
        section = recipe[stage] or {}
        if not isinstance(section, dict):
            raise RecipeError(f"Recipe section {stage!r} must be a mapping.")
        return dict(section)
    if any(k in recipe for k in known_stages):
        return {}
    return {k: v for k, v in recipe.items() if k not in ("name", "description")}


def _field_names(dataclass_types) -> set[str]:
    return {f.name for dc in dataclass_types for f in dataclasses.fields(dc) if f.init}


def check_keys(mapping: dict[str, Any], dataclass_types, where: str) -> None:
    unknown = sorted(set(mapping) - _field_names(dataclass_types))
    if unknown:
        valid = ", ".join(sorted(_field_names(dataclass_types)))
        raise RecipeError(f"Unknown key(s) {unknown} in {where}. Valid keys: {valid}")


def args_from_dict(dataclass_types, mapping: dict[str, Any], where: str = "recipe") -> tuple:
    """Build the stage dataclasses from a mapping (used by `bortify run`)."""
    check_keys(mapping, dataclass_types, where)
    parser = HfArgumentParser(dataclass_types)
    return parser.parse_dict(mapping, allow_extra_keys=False)


def parse_stage_args(
    dataclass_types,
    argv: Sequence[str] | None,
    *,
    stage: str,
    prog: str,
    description: str,
    known_stages: Sequence[str] = STAGE_NAMES,
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
        parser.set_defaults(**section)
        for action in parser._actions:  # a value from the recipe satisfies a required flag
            if action.dest in section:
                action.required = False
    outputs = parser.parse_args_into_dataclasses(args=argv)
    return tuple(outputs[: len(dataclass_types)])  # the last output is the namespace holding --config


def _find_config(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None
