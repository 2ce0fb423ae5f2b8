"""bortify/data.py: where datasets come from (a local file, files, a folder, a saved dataset, an embedded default or
a Hub name), split roles by file name, and the errors that name the problem and the fix."""

import pytest

from bortify.data import (
    DataError,
    _looks_local,
    load_any_dataset,
    load_text_corpus,
    local_data_files,
    split_files_of_dir,
    split_of_file,
)


@pytest.mark.parametrize("name, split", [("train.csv", "train"), ("train-00001.parquet", "train"),
                                         ("dev.tsv", "validation"), ("valid.json", "validation"),
                                         ("validation_2.csv", "validation"), ("test.jsonl", "test"),
                                         ("trainer.csv", None), ("testimonials.txt", None), ("reviews.csv", None)])
def test_split_of_file_reads_the_role_from_the_name(name, split):
    assert split_of_file(name) == split


def test_split_files_of_dir_uses_subfolder_names_and_hidden_files_are_skipped(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "part-0.csv").write_text("text\na\n")
    (tmp_path / "test.csv").write_text("text\nb\n")
    (tmp_path / ".DS_Store").write_text("junk")
    files = split_files_of_dir(str(tmp_path))
    assert {k: [p.rsplit("/", 1)[-1] for p in v] for k, v in files.items()} == {"train": ["part-0.csv"],
                                                                                 "test": ["test.csv"]}
    assert list(split_files_of_dir(str(tmp_path), keep_roles=False)) == ["train"]  # a corpus: every file
    (tmp_path / "train" / "part-0.csv").unlink()
    with pytest.raises(DataError, match="none named train"):
        split_files_of_dir(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no data files"):
        split_files_of_dir(str(empty))


def test_local_data_files_forms(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("text\nx\n")
    b.write_text("text\ny\n")
    assert local_data_files(f"{a}, {b}") == {"train": [str(a), str(b)]}  # comma-separated files
    assert local_data_files(None, {"train": str(a), "test": [str(b)]}) == {"train": [str(a)], "test": [str(b)]}
    assert local_data_files("embedded:rotten-tomatoes") is None
    assert local_data_files("glue") is None  # a Hub name: not local


@pytest.mark.parametrize("spec, local", [("./reviews", True), ("/data/reviews", True), ("~/reviews", True),
                                         ("a/b/c", True), ("reviews.csv", True), ("data/train.jsonl.gz", True),
                                         ("glue", False), ("stanfordnlp/imdb", False)])
def test_a_spec_that_can_only_be_local_is_told_by_the_hub_repo_id_rule(spec, local):
    assert _looks_local(spec) is local


def test_a_missing_local_path_is_named_not_sent_to_the_hub(tmp_path):
    for spec in (str(tmp_path / "no" / "such"), "no/such/folder", "./missing"):
        with pytest.raises(DataError, match="does not exist"):
            load_any_dataset(spec)


def test_tsv_jsonl_and_a_saved_dataset_load(tmp_path):
    import datasets

    (tmp_path / "d.tsv").write_text("text\tlabel\nnice, really\t1\n")
    assert load_any_dataset(str(tmp_path / "d.tsv"))["train"][0] == {"text": "nice, really", "label": 1}
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n')
    assert load_any_dataset(str(tmp_path / "d.jsonl"))["train"]["text"] == ["a", "b"]
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["s"]})}).save_to_disk(str(saved))
    assert load_any_dataset(str(saved))["train"]["text"] == ["s"]
    with pytest.raises(DataError, match="Mixed file formats"):
        load_any_dataset(f"{tmp_path / 'd.tsv'},{tmp_path / 'd.jsonl'}")


def test_text_corpus_drops_blank_rows_and_checks_the_split(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("first line\n\n   \nsecond line\n")
    assert load_text_corpus(str(corpus))["text"] == ["first line", "second line"]
    with pytest.raises(DataError, match="no split 'validation'"):
        load_text_corpus(str(corpus), split="validation")


# --- moved from test_recipes_data.py (data loading belongs here) -------------------------------------------------

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
