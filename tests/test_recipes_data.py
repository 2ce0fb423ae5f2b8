from dataclasses import dataclass, field

import pytest

from bortify.data import DataError, load_any_dataset, load_text_corpus
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


def test_local_files_and_errors(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("sentence,label\nnice film,1\nbad film,0\n")
    dsd = load_any_dataset(str(csv))
    assert dsd["train"].column_names == ["sentence", "label"] and len(dsd["train"]) == 2
    with pytest.raises(DataError, match="no text column 'text'"):
        load_text_corpus(str(csv))
    empty = tmp_path / "e.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        load_text_corpus(str(empty))
    unknown = tmp_path / "x.xyz"
    unknown.write_text("a")
    with pytest.raises(DataError, match="Cannot tell the format"):
        load_any_dataset(str(unknown))
    assert len(load_text_corpus("embedded:corpus")) > 15_000


def test_sectioned_recipe_without_this_stage_is_not_read_as_flat(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("pretrain:\n  teacher: t\n")  # another stage's section only
    (args,) = parse_stage_args((ToyArgs,), ["--config", str(recipe), "--source", "s"], stage="extract", prog="t", description="d")
    assert (args.source, args.epsilon) == ("s", 0.0)


def test_a_folders_split_files_keep_their_roles_and_a_corpus_folder_reads_every_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("text,label\na,1\nb,0\nc,1\n")
    (data / "dev.csv").write_text("text,label\nd,0\n")
    (data / "test.csv").write_text("text,label\ne,1\nf,0\n")
    dsd = load_any_dataset(str(data))
    assert {k: len(v) for k, v in dsd.items()} == {"train": 3, "validation": 1, "test": 2}  # never merged
    assert dsd["test"]["text"] == ["e", "f"]
    (data / "notes.csv").write_text("text,label\ng,1\n")
    with pytest.raises(DataError, match=r"mixes split files.*notes\.csv"):
        load_any_dataset(str(data))
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "reviews.csv").write_text("text,label\na,1\n")
    (plain / "more.csv").write_text("text,label\nb,0\n")
    assert list(load_any_dataset(str(plain))) == ["train"] and len(load_any_dataset(str(plain))["train"]) == 2
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.txt").write_text("one line\n")
    (corpus / "test.txt").write_text("another line\n")
    assert len(load_text_corpus(str(corpus))) == 2  # raw text to learn from: every file


def test_missing_empty_and_header_only_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv.*does not exist"):
        load_any_dataset(str(tmp_path / "nope.csv"))
    with pytest.raises(DataError, match=r"nope\.csv.*does not exist"):
        load_any_dataset("nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty\.csv.*empty \(0 bytes\)"):
        load_any_dataset(str(tmp_path / "empty.csv"))
    (tmp_path / "head.csv").write_text("text,label\n")
    with pytest.raises(DataError, match=r"head\.csv.*no rows"):
        load_any_dataset(str(tmp_path / "head.csv"))
