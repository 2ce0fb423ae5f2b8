"""`bortify bench` and the one latency timer (docs/methods/05-compression.md §5.s): structure and positivity, never timings
(the machine is shared and noisy)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bortify.bench import (DEFAULT_INT8_PATH, BenchArguments, BenchError, bench, int8_cpu_model,
                           path_unavailable_reason, report_latency)
from bortify.extraction.costs import Shape, operation_count
from bortify.outputs import MARKER
from bortify.reports import BenchReport, read_report
from bortify.timing import Timing, time_call, time_calls
from casetable import Case, run_case

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tiny_task_model(tmp_path, tiny_bert_config, minilm_path):
    """A tiny random BertForSequenceClassification saved with the packaged models' tokenizer."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)
    tiny_bert_config.num_labels = 2
    model = BertForSequenceClassification(tiny_bert_config).eval()
    path = tmp_path / "model"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(path)
    return path


@pytest.fixture
def tiny_source(tmp_path, tiny_bert_config):
    """A 'source' twice as deep and wide as the tiny model (config only: bench builds it with random weights)."""
    source = tiny_bert_config.__class__(**{**tiny_bert_config.to_dict(), "num_hidden_layers": 4, "hidden_size": 64,
                                           "intermediate_size": 256})
    path = tmp_path / "source"
    source.save_pretrained(path)
    return path


# ---- the timer -----------------------------------------------------------------------------------------------

def test_time_calls_alternates_pools_medians_and_restores_threads():
    calls, threads_seen = [], set()

    def make(name):
        def fn():
            calls.append(name)
            threads_seen.add(torch.get_num_threads())
            sum(range(2000))
        return fn

    before = torch.get_num_threads()
    out = time_calls({"a": make("a"), "b": make("b")}, threads=1, rounds=3, min_run_time=0.001, warmup=2)
    assert set(out) == {"a", "b"} and all(isinstance(t, Timing) for t in out.values())
    for t in out.values():
        assert t.median_s > 0 and t.iqr_s >= 0 and t.blocks >= 3 and t.calls >= t.blocks
    assert calls[:4] == ["a", "a", "b", "b"]  # the warm-up calls, untimed, come first
    switches = sum(x != y for x, y in zip(calls, calls[1:]))
    assert switches >= 2 * 3 - 1  # a, b, a, b, ...: each round times both
    assert threads_seen == {1} and torch.get_num_threads() == before


def test_time_call_checks_its_settings():
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        time_call(lambda: None, rounds=0)


def test_card_and_extraction_use_the_one_timer(monkeypatch, tiny_bert_config):
    """measure_latency (extraction's measured cost) and compare_latency (the card) both time through
    bortify.timing.time_calls: patching it changes what they return."""
    import bortify.timing
    from bortify.extraction.costs import measure_latency
    from bortify.hub.card import compare_latency

    def fake(fns, **kw):
        for fn in fns.values():
            fn()  # the real forward passes still run
        return {name: Timing(0.5 + i, 0.0, kw["rounds"], kw["rounds"]) for i, name in enumerate(fns)}

    monkeypatch.setattr(bortify.timing, "time_calls", fake)
    assert measure_latency(tiny_bert_config, batch_size=1, seq_len=8, repeats=2) == 0.5
    assert compare_latency(tiny_bert_config, tiny_bert_config, 1, 8, 2, threads=1) == (0.5, 1.5)


# ---- the int8 paths --------------------------------------------------------------------------------------------

def _batch(vocab=30522, n=4, length=12):
    ids = torch.randint(5, vocab, (n, length), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("path", ["torch-dynamic", DEFAULT_INT8_PATH])
def test_int8_cpu_model_follows_fp32(path, tiny_bert_config):
    from transformers import BertForSequenceClassification

    if path_unavailable_reason(path):
        pytest.skip(path_unavailable_reason(path))
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config).eval()
    batch = _batch()
    with torch.inference_mode():
        fp32 = model(**batch).logits.numpy()
    runner = int8_cpu_model(model, path)
    int8 = np.asarray(runner(batch))
    assert int8.shape == fp32.shape and np.isfinite(int8).all()
    assert np.abs(int8 - fp32).max() < 0.05 * max(1.0, np.abs(fp32).max())  # int8 rounding, not another model
    assert not np.array_equal(int8, fp32)  # it really is quantised


def test_int8_cpu_model_names_the_install_for_a_missing_path(monkeypatch, tiny_bert_config):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a))
    from transformers import BertModel

    with pytest.raises(BenchError, match="pip install torchao"):
        int8_cpu_model(BertModel(tiny_bert_config), "torchao")


# ---- the stage -------------------------------------------------------------------------------------------------

def _run(tmp_path, model, source, paths, **kw):
    args = BenchArguments(model=str(model), source=str(source) if source else None, output_dir=str(tmp_path / "bench"),
                          batch_sizes=[1, 2], seq_lens=[8, 16], paths=paths, rounds=1, min_run_time=0.0,
                          max_texts=12, text_batch_size=4, max_length=16, **kw)
    return bench(args, progress=False)


def _check_report(report, out, paths, model_cfg, source_cfg):
    assert report.paths == paths
    assert len(report.grid) == len(paths) * 2 * 2
    for c in report.grid:
        assert c.model_ms > 0 and c.source_ms > 0 and c.model_calls >= 1
        assert c.speedup == pytest.approx(c.source_ms / c.model_ms)
        ops = [operation_count(Shape.from_config(cfg), c.seq_len) for cfg in (source_cfg, model_cfg)]
        ratio = ops[0] / ops[1]
        assert c.macs_ratio == pytest.approx(ratio) and c.macs_ratio > 1
        fp32 = report.cell("fp32", c.batch_size, c.seq_len)
        assert c.speedup_vs_source_fp32 == pytest.approx(fp32.source_ms / c.model_ms)
        assert c.int8_gain == pytest.approx(fp32.model_ms / c.model_ms)
    s = report.sentences
    assert s["texts"] == 12 and all(s[p]["sentences_per_s"] > 0 for p in paths)
    assert all(0.0 <= s[p]["agreement_with_fp32"] <= 1.0 for p in paths if p != "fp32")
    stored = read_report(out, BenchReport)
    assert stored.to_dict() == json.loads((out / "report.json").read_text()) and stored.grid[0].path == "fp32"
    assert (out / "bench.png").stat().st_size > 1000
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [MARKER]  # no temporaries, the marker kept
    lines = report.summary_lines()
    assert any(line.startswith("fp32: batch 2 x 16") and "multiply-adds" in line for line in lines)
    assert any("real texts (12 from embedded:rotten-tomatoes" in line for line in lines)


def test_bench_grid_ratios_report_and_plot(tmp_path, tiny_task_model, tiny_source, tiny_bert_config):
    from transformers import AutoConfig

    report = _run(tmp_path, tiny_task_model, tiny_source, ["fp32", "torch-dynamic"])
    _check_report(report, tmp_path / "bench", ["fp32", "torch-dynamic"], tiny_bert_config,
                  AutoConfig.from_pretrained(tiny_source))


@pytest.mark.slow
def test_bench_onnx_paths(tmp_path, tiny_task_model, tiny_source, tiny_bert_config):
    """ONNX Runtime and OpenVINO (export + int8 quantisation of model and source)."""
    from transformers import AutoConfig

    paths = ["fp32", *[p for p in ("onnxruntime", "openvino") if not path_unavailable_reason(p)]]
    report = _run(tmp_path, tiny_task_model, tiny_source, paths)
    _check_report(report, tmp_path / "bench", paths, tiny_bert_config, AutoConfig.from_pretrained(tiny_source))


def test_bench_times_the_source_on_the_real_texts(tmp_path, tiny_task_model, tiny_source, capsys):
    """`bortify bench MODEL --source S`: the source's fp32 sentences/s on the same texts (the model's tokenizer: the
    config-only source has none, the vocabularies match), and the model/source ratio in what the command prints."""
    from bortify.pipeline import run_command

    rc = run_command("bench", [str(tiny_task_model), "--source", str(tiny_source), "--output_dir", str(tmp_path / "b"),
                               "--paths", "fp32", "--batch_sizes", "1", "--seq_lens", "8", "--rounds", "1",
                               "--min_run_time", "0", "--max_texts", "8", "--text_batch_size", "4",
                               "--max_length", "16"])
    printed = capsys.readouterr().out
    assert rc == 0
    report = read_report(tmp_path / "b", BenchReport)
    src = report.source_sentences
    assert src.sentences_per_s > 0 and src.seconds > 0 and src.tokenizer == "model" and src.skipped is None
    assert json.loads((tmp_path / "b" / "report.json").read_text())["source_sentences"]["sentences_per_s"] > 0
    ratio = report.sentences["fp32"]["sentences_per_s"] / src.sentences_per_s
    assert report.source_speed_ratio() == pytest.approx(ratio)
    assert f"the model's fp32 is {ratio:.1f}x the source's sentences/s" in printed


def test_source_without_a_usable_tokenizer_is_skipped_with_a_note(tmp_path, tiny_bert_config, minilm_path):
    """A source whose vocabulary is not the model's and has no tokenizer: not timed, and the report says why; a
    source with its own tokenizer uses it."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from bortify.bench import source_text_batches

    model = BertForSequenceClassification(tiny_bert_config).eval()
    other = BertConfig(**{**tiny_bert_config.to_dict(), "vocab_size": 1000})
    other.save_pretrained(tmp_path / "src")
    source = BertForSequenceClassification(other).eval()
    args = BenchArguments(model="m", source=str(tmp_path / "src"), output_dir=str(tmp_path / "o"), max_length=16,
                          text_batch_size=2)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    batches, info = source_text_batches(args, source, model, tokenizer, ["a film", "a fine film"], ["fp32"])
    assert batches is None and "no tokenizer" in info["skipped"] and "(1000)" in info["skipped"]
    assert "no fp32" in source_text_batches(args, source, model, tokenizer, ["a"], ["torch-dynamic"])[1]["skipped"]
    args.source = str(minilm_path)  # the packaged MiniLM: its own tokenizer (30522 ids, MiniLM's vocabulary)
    minilm = BertForSequenceClassification(BertConfig(**tiny_bert_config.to_dict())).eval()
    batches, info = source_text_batches(args, minilm, model, None, ["a film", "a fine film"], ["fp32"])
    assert info == {"tokenizer": "source"} and len(batches) == 1 and batches[0]["input_ids"].shape[0] == 2

def test_bench_without_source_has_no_ratios(tmp_path, tiny_task_model):
    report = _run(tmp_path, tiny_task_model, None, ["fp32"], dataset=None)
    assert all(c.source_ms is None and c.speedup is None and c.model_ms > 0 for c in report.grid)
    assert report.sentences == {} and report_latency(report) is None


def test_auto_paths_list_what_is_not_installed(monkeypatch):
    import importlib.util

    from bortify.bench import chosen_paths

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a))
    paths, skipped = chosen_paths(["auto"])
    assert paths[0] == "fp32" and "torch-dynamic" in paths and "torchao" not in paths
    assert "pip install torchao" in skipped["torchao"]


# ---- the card quotes bench -------------------------------------------------------------------------------------

def _bench_report(tmp_path):
    cells = []
    for path, model_ms, source_ms in (("fp32", 10.0, 120.0), (DEFAULT_INT8_PATH, 4.0, 40.0)):
        for b, L in ((1, 32), (8, 128)):
            cells.append({"path": path, "batch_size": b, "seq_len": L, "model_ms": model_ms * b,
                          "source_ms": source_ms * b,
                          "macs_ratio": 12.5, "speedup": source_ms / model_ms,
                          "speedup_vs_source_fp32": 120.0 / model_ms})
    report = BenchReport.make({"model": "m", "source": "embedded:all-MiniLM-L6-v2", "threads": 1, "rounds": 3,
                               "paths": ["fp32", DEFAULT_INT8_PATH], "int8_default": DEFAULT_INT8_PATH, "grid": cells})
    from bortify.reports import write_report

    write_report(tmp_path / "bench", report)
    return report


def test_report_latency_picks_the_cell_nearest_the_card_settings(tmp_path):
    lat = report_latency(_bench_report(tmp_path), batch_size=8, seq_len=100)
    assert (lat["batch_size"], lat["seq_len"]) == (8, 128) and lat["timer"] == "bench"
    assert lat["model_seconds"] == pytest.approx(0.080) and lat["speedup"] == pytest.approx(12.0)
    assert lat["int8_path"] == DEFAULT_INT8_PATH and lat["int8_model_seconds"] == pytest.approx(0.032)


def test_card_latency_line_comes_from_the_bench_report(tmp_path):
    from pathlib import Path

    from bortify.hub.card import CardOptions, collect_evidence, render_card

    demo = Path(__file__).parent / "data" / "demo_run"
    _bench_report(tmp_path)
    dirs = {"extract": str(demo / "extract"), "finetune": str(demo / "finetune"), "bench": str(tmp_path / "bench")}
    options = CardOptions(measure_latency=False)  # the card measures nothing itself: the figure is bench's
    evidence = collect_evidence(dirs, demo, options)  # the stored demo run: its checkpoint is a config.json alone
    assert evidence["latency"]["timer"] == "bench" and evidence["latency"]["speedup"] == pytest.approx(12.0)
    text = str(render_card(evidence, options))
    assert "**80.0 ms** for this model vs 960.0 ms" in text and "by `bortify bench`" in text
    assert "Forward pass of the model (as released, head included), batch 8 × 128" in text
    assert "multiply-add ratio 12.5×" in text and f"int8 ({DEFAULT_INT8_PATH}): 32.0 ms, 30.0× faster" in text


# ---- bad input ---------------------------------------------------------------------------------------------------

def _model(root):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=200, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertForSequenceClassification(config).save_pretrained(root / "model")
    (root / "out").mkdir()
    (root / "out" / "report.json").write_text("{}")
    return {}


CASES = [
    Case("bench-unknown-path", ["bench", "{root}/model", "--output_dir", "{root}/b", "--paths", "int4"],
         r"--paths: unknown \['int4'\]", setup=_model),
    Case("bench-zero-length", ["bench", "{root}/model", "--output_dir", "{root}/b", "--seq_lens", "0"],
         r"--seq_lens must be positive", setup=_model),
    Case("bench-too-long", ["bench", "{root}/model", "--output_dir", "{root}/b", "--seq_lens", "128"],
         r"exceeds max_position_embeddings=64; pass lengths <= 64", setup=_model),
    Case("bench-no-model", ["bench", "{root}/nothing", "--output_dir", "{root}/b"], r"nothing"),
    Case("bench-finished-output", ["bench", "{root}/model", "--output_dir", "{root}/out", "--paths", "fp32",
                                   "--seq_lens", "8", "--batch_sizes", "1", "--dataset", ""],
         r"already holds results. Pass --overwrite", setup=_model),
    # the output contract (bortify.outputs): bench never replaces another stage's report.json, even with --overwrite
    Case("bench-over-a-finetune-output", ["bench", "{root}/model", "--output_dir", "{root}/ft", "--overwrite",
                                          "--paths", "fp32", "--seq_lens", "8", "--batch_sizes", "1", "--dataset", ""],
         r"ft is not an output of `bortify bench` \(it holds config\.json, model\.safetensors\)",
         setup=lambda root: _model(root) or _finetune_output(root / "ft", marker=False)),
    Case("bench-over-a-marked-finetune-output", ["bench", "{root}/model", "--output_dir", "{root}/ft", "--overwrite",
                                                 "--paths", "fp32", "--seq_lens", "8", "--batch_sizes", "1",
                                                 "--dataset", ""],
         r"ft holds the output of `bortify finetune`.*neither writes into it nor replaces it, even with --overwrite",
         setup=lambda root: _model(root) or _finetune_output(root / "ft", marker=True)),
    Case("bench-output-is-the-model", ["bench", "{root}/model", "--output_dir", "{root}/model", "--overwrite",
                                       "--paths", "fp32", "--seq_lens", "8", "--batch_sizes", "1", "--dataset", ""],
         r"--output_dir .*model is the input model.*never replaces an input", setup=_model),
]


def _finetune_output(out, marker: bool) -> dict:
    """A finished fine-tuning output: a checkpoint and its report (the card reads the dataset from it)."""
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"weights")
    (out / "report.json").write_text('{"dataset": "embedded:rotten-tomatoes"}')
    if marker:
        (out / MARKER).write_text(json.dumps({"stage": "finetune", "files": ["config.json", "model.safetensors",
                                                                            "report.json"]}))
    return {}


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_input(case, tmp_path, monkeypatch, capsys):
    run_case(case, tmp_path, monkeypatch, capsys)


def test_bortify_run_wires_bench_between_finetune_and_card(tmp_path):
    """In a run, bench measures the finetune output against extract's source, and the card reads bench's report."""
    from bortify.pipeline import stage_config
    from bortify.stages import BY_NAME, STAGE_NAMES

    assert STAGE_NAMES.index("finetune") < STAGE_NAMES.index("bench") < STAGE_NAMES.index("card")
    recipe = {"extract": {"source": "embedded:all-MiniLM-L6-v2"}, "bench": {"seq_lens": [128]}, "card": {}}
    outputs = {"finetune": str(tmp_path / "finetune"), "bench": str(tmp_path / "bench")}
    bench_config = stage_config(BY_NAME["bench"], recipe, outputs, tmp_path)
    assert bench_config == {"seq_lens": [128], "output_dir": str(tmp_path / "bench"),
                            "model": str(tmp_path / "finetune"), "source": "embedded:all-MiniLM-L6-v2"}
    assert stage_config(BY_NAME["card"], recipe, outputs, tmp_path)["bench_dir"] == str(tmp_path / "bench")
