"""One ONNX path, one timer, and what a release may carry (bortify.hygiene, bortify.timing,
bortify.compression.onnx_export). The push/card/Trainer-option rows are in the case tables
(test_cases_pipeline.py, test_cases_finetune.py, test_cases_pretrain.py)."""

import ast
from pathlib import Path

import pytest

from casetable import Case, run_case

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def shipped_release(tmp_path_factory, splade_path):
    """A tiny task model with its tokenizer and onnx/ made by the release's export (as compress writes it)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from bortify.compression.onnx_export import export_release_onnx

    path = tmp_path_factory.mktemp("shipped") / "model"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(splade_path).save_pretrained(path)
    export_release_onnx(model, path)
    return path


def _bytes_under(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*.onnx")}


def test_release_onnx_carries_no_metadata_or_local_paths(shipped_release):
    import onnx

    from bortify.hygiene import find_leaks

    for name in ("model.onnx", "model_quantized.onnx"):
        proto = onnx.load(str(shipped_release / "onnx" / name))
        assert not proto.metadata_props and not proto.doc_string and not proto.graph.doc_string
        nodes = list(proto.graph.node) + [n for f in proto.functions for n in f.node]
        assert nodes and not any(n.metadata_props or n.doc_string for n in nodes), name
    files = _bytes_under(shipped_release)
    assert find_leaks(shipped_release, list(files)) == []
    assert b"stack_trace" not in b"".join(files.values()) and str(ROOT).encode() not in b"".join(files.values())


def test_strip_metadata_empties_every_level():
    from onnx import TensorProto, helper

    from bortify.compression.onnx_export import strip_metadata

    node = helper.make_node("Identity", ["x"], ["y"], doc_string="built at /home/alice/x.py")
    entry = node.metadata_props.add()
    entry.key, entry.value = "pkg.torch.onnx.stack_trace", 'File "/home/alice/modeling.py", line 1'
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], doc_string="/tmp/x")
    model = helper.make_model(graph, doc_string="/root/y")
    helper.set_model_props(model, {"source": "/home/alice"})
    assert strip_metadata(model) == 5
    assert b"/home/alice" not in model.SerializeToString() and b"/tmp/" not in model.SerializeToString()


def test_bench_times_the_shipped_int8_file(shipped_release, tmp_path, monkeypatch):
    """With onnx/model_quantized.onnx in the model folder, bench's ONNX path runs that file and exports nothing."""
    import bortify.bench
    from bortify.bench import BenchArguments, bench, path_unavailable_reason
    from bortify.timing import cpu_name

    if path_unavailable_reason("onnxruntime"):
        pytest.skip(path_unavailable_reason("onnxruntime"))

    def no_export(*args, **kwargs):
        raise AssertionError("bench exported its own ONNX although the folder ships one")

    monkeypatch.setattr(bortify.bench, "export_int8_onnx", no_export)
    args = BenchArguments(model=str(shipped_release), output_dir=str(tmp_path / "bench"), paths=["fp32", "onnxruntime"],
                          batch_sizes=[1], seq_lens=[8], rounds=1, min_run_time=0.0, warmup=0, dataset="")
    report = bench(args, progress=False)
    assert report.int8_onnx == "shipped onnx/model_quantized.onnx" and report.cpu == cpu_name()
    assert {c.path for c in report.grid} == {"fp32", "onnxruntime"}
    assert cpu_name() in "\n".join(report.summary_lines())


def test_bench_without_a_shipped_file_uses_the_release_export(tmp_path, monkeypatch, tiny_bert_config):
    """A folder without onnx/: the int8 file comes from the release's own export and quantisation."""
    import torch
    from transformers import BertForSequenceClassification

    import bortify.compression.onnx_export as ox
    from bortify.bench import int8_cpu_model, path_unavailable_reason

    if path_unavailable_reason("onnxruntime"):
        pytest.skip(path_unavailable_reason("onnxruntime"))
    calls = []
    real = ox.export_onnx
    monkeypatch.setattr(ox, "export_onnx", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    model = BertForSequenceClassification(tiny_bert_config).eval()
    ids = torch.randint(5, 1000, (2, 9))
    runner = int8_cpu_model(model, "onnxruntime", workdir=tmp_path)
    assert calls and runner({"input_ids": ids, "attention_mask": torch.ones_like(ids)}).shape == (2, 2)


def test_one_timer_module_imports_nothing_from_bortify():
    tree = ast.parse((ROOT / "bortify" / "timing.py").read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m.startswith("bortify")]
    costs = (ROOT / "bortify" / "extraction" / "costs.py").read_text()
    assert "bortify.bench" not in costs and "bortify.timing" in costs  # no cycle: costs -> timing, bench -> costs
    for name in ("export_onnx", "quantize_onnx"):  # one ONNX path
        defs = [p for p in (ROOT / "bortify").rglob("*.py") if f"def {name}(" in p.read_text()]
        assert [p.relative_to(ROOT).as_posix() for p in defs] == ["bortify/compression/onnx_export.py"], name


def test_hub_options_are_named():
    from bortify.hygiene import hub_training_problems

    assert hub_training_problems({"hub_token": "hf_x", "push_to_hub": False, "report_to": "none"}) == ["hub_token=***"]
    assert hub_training_problems({"report_to": ["tensorboard", "mlflow"]})[0].startswith("report_to=['mlflow']")
    assert hub_training_problems({"hub_strategy": "every_save"}, defaults={"hub_strategy": "every_save"}) == []


CASES = [
    Case("bench-onnx-dir-without-file", ["bench", "{model}", "--output_dir", "{root}/out", "--onnx_dir", "{root}/empty",
                                         "--paths", "fp32", "onnxruntime", "--dataset", "", "--seq_lens", "8"],
         r"--onnx_dir .*empty has no onnx/model_quantized\.onnx"),  # before the model is loaded
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_input(case, tmp_path, monkeypatch, capsys, shipped_release):
    import shutil

    def setup(root):
        shutil.copytree(shipped_release, root / "model", ignore=shutil.ignore_patterns("onnx"))
        (root / "empty").mkdir()
        return {"model": str(root / "model")}

    case.setup = setup
    run_case(case, tmp_path, monkeypatch, capsys)
