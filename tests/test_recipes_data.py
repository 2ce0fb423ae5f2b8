from dataclasses import dataclass, field

import pytest

from bortify.recipes import RecipeError, parse_stage_args


@dataclass
class ToyArgs:
    source: str = field(metadata={"help": "where from"})
    epsilon: float = field(default=0.0, metadata={"help": "approximation"})
    sizes: list[int] = field(default_factory=lambda: [1, 2], metadata={"help": "sizes"})


def test_recipe_section_and_override(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("extract:\n  source: a\n  epsilon: 0.1\n  sizes: [3, 4]\npretrain:\n  x: 1\n")
    (args,) = parse_stage_args((ToyArgs,), ["--config", str(recipe), "--epsilon", "0.3"], stage="extract", prog="t", description="d")
    assert (args.source, args.epsilon, args.sizes) == ("a", 0.3, [3, 4])


def test_recipe_unknown_key(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("extract:\n  source: a\n  epsilonn: 0.1\n")
    with pytest.raises(RecipeError, match="epsilonn"):
        parse_stage_args((ToyArgs,), ["--config", str(recipe)], stage="extract", prog="t", description="d")


def test_missing_required_flag_without_recipe():
    with pytest.raises(SystemExit):
        parse_stage_args((ToyArgs,), [], stage="extract", prog="t", description="d")


def test_sectioned_recipe_without_this_stage_is_not_read_as_flat(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("pretrain:\n  teacher: t\n")  # another stage's section only
    (args,) = parse_stage_args((ToyArgs,), ["--config", str(recipe), "--source", "s"], stage="extract", prog="t", description="d")
    assert (args.source, args.epsilon) == ("s", 0.0)
