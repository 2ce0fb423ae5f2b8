"""Bad-input case table for `bortify run`, `card` and `push` (tests/casetable.py harness).

Every row runs the real command in-process in a scratch directory and asserts the exit code, a message naming
the problem on stderr, no traceback, no training, and that every file that existed before is byte-identical.
Checkpoints are tiny and real: a random 2-layer BertForSequenceClassification with splade-tiny's tokenizer.
"""

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

from casetable import Case, run_case

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOKEN = "hf_" + "CaseTable7" * 4  # token-shaped: refused in recipes, never echoed
HUB_TOKEN = "hf_casetableHUBtoken_0123456789"
TINY: dict[str, Path] = {}  # "model": a tiny saved classifier (filled by the module fixture)
HUB: dict[str, str] = {}  # "url": the loopback Hub of the push rows


@pytest.fixture(scope="module", autouse=True)
def tiny_checkpoint(tmp_path_factory, splade_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "model"
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=2,
                        id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    AutoModelForSequenceClassification.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(splade_path).save_pretrained(path)
    TINY["model"] = path
    yield
    TINY.clear()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def recipe(text: str):
    """setup: a recipe file `r.yaml` with `{root}` filled in."""
    def setup(root: Path):
        write(root / "r.yaml", text.replace("{root}", str(root)))
    return setup


def finished_run(root: Path) -> dict:
    """A run directory whose finetune stage finished: tiny checkpoint + report, and extract/pretrain reports."""
    run = root / "run"
    shutil.copytree(TINY["model"], run / "finetune")
    write(run / "finetune" / "report.json", '{"dataset": "embedded:rotten-tomatoes", "mode": "plain"}')
    write(run / "finetune" / "stage_done.json", '{"stage": "finetune"}')
    write(run / "extract" / "report.json", "{}")
    write(run / "pretrain" / "report.json", "{}")
    write(root / "notes.txt", "the user's own file")
    return {"run": str(run), "ft": str(run / "finetune")}


def release_with_pickles(root: Path) -> dict:
    """A release folder made by the card stage, plus a pickle checkpoint beside the safetensors."""
    from bortify.hub.card_stage import run_stage

    finished_run(root)
    run_stage({"stage_dirs": {"finetune": str(root / "run" / "finetune")}, "output_dir": str(root / "release"),
               "measure_latency": False})
    (root / "release" / "pytorch_model.bin").write_bytes(b"a pickle that must not be uploaded")
    return {"release": str(root / "release"), "endpoint": HUB.get("url", "")}


def missing_train_file(root: Path) -> None:
    shutil.copytree(TINY["model"], root / "model")
    recipe(FINETUNE_MISSING_FILE)(root)


def pushed_without_bin(root: Path) -> None:
    files = HUB_FILES["tester/cases"]()
    assert "pytorch_model.bin" not in files and "model.safetensors" in files


# ---- a broken model never looks like a result; inputs that used to crash or hang ----------------------------

BOMB = "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9 if p else ['lol'] * 9)}]\n"
               for p, c in zip(["", *"abcdefgh"], "abcdefghi"))  # 1 KB of YAML, 9^9 strings when expanded


def poison(folder: Path) -> None:
    """One weight tensor of a saved checkpoint set to NaN (what a diverged training run leaves)."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    name = next(k for k in tensors if "embeddings" in k and tensors[k].is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def sick_model(root: Path) -> dict:
    shutil.copytree(TINY["model"], root / "sick")
    poison(root / "sick")
    return {"sick": str(root / "sick")}


def pickle_only(root: Path) -> dict:
    shutil.copytree(TINY["model"], root / "pkl")
    (root / "pkl" / "model.safetensors").rename(root / "pkl" / "pytorch_model.bin")
    return {"pkl": str(root / "pkl")}


def gpt2_classifier(root: Path) -> dict:
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    config = GPT2Config(vocab_size=30522, n_layer=1, n_head=2, n_embd=16, n_positions=64, num_labels=2,
                        pad_token_id=0)
    GPT2ForSequenceClassification(config).save_pretrained(root / "gpt2")
    AutoTokenizer.from_pretrained(TINY["model"]).save_pretrained(root / "gpt2")
    return {"gpt2": str(root / "gpt2")}


def nan_metric_run(root: Path) -> dict:
    values = finished_run(root)
    write(root / "run" / "finetune" / "report.json", '{"dataset": "embedded:rotten-tomatoes", "mode": "plain", '
                                                     '"metric": "accuracy", "test": {"accuracy": NaN}}')
    return values


def sick_pair(root: Path) -> dict:
    shutil.copytree(TINY["model"], root / "old")
    rows = "".join(f"{'a good' if i % 2 else 'a bad'} film {i},{'pos' if i % 2 else 'neg'}\n" for i in range(20))
    write(root / "d.csv", "text,label\n" + rows)
    return sick_model(root)


BROKEN_CASES = [
    Case("run-yaml-alias-bomb", ["run", "{root}/r.yaml"], r"r\.yaml uses a YAML anchor \(&a\) at line 1.*anchors and "
         r"aliases", setup=recipe(BOMB)),
    Case("run-yaml-self-alias", ["run", "{root}/r.yaml"], r"uses a YAML anchor \(&x\) at line 1",
         setup=recipe("extract: &x {source: embedded:all-MiniLM-L6-v2, self: *x}\n")),
    Case("run-yaml-merge-key", ["run", "{root}/r.yaml"], r"uses a YAML alias \(\*base\) at line 2",
         setup=recipe("card: {measure_latency: false}\nextract: {<<: *base}\n")),
    Case("bench-pickle-only-folder", ["bench", "--model", "{pkl}", "--output_dir", "{root}/b"],
         r"pkl has no model\.safetensors \(only \['pytorch_model\.bin'\]", setup=pickle_only),
    Case("bench-nan-weights", ["bench", "--model", "{sick}", "--output_dir", "{root}/b"],
         r"The model .*sick .*has non-finite weights \(NaN or inf\)", setup=sick_model),
    Case("compress-gpt2", ["compress", "--model_dir", "{gpt2}", "--output_dir", "{root}/c"],
         r"holds a gpt2 model, not a BERT-family encoder .*intermediate_size", setup=gpt2_classifier),
    Case("compress-nan-weights", ["compress", "--model_dir", "{sick}", "--output_dir", "{root}/c"],
         r"sick/model\.safetensors has non-finite weights", setup=sick_model),
    Case("compress-max-length-above-positions", ["compress", "--model_dir", "{ft}", "--output_dir", "{root}/c",
                                                 "--max_length", "200"],
         r"--max_length 200 exceeds what the model in .*finetune can read: .*max_position_embeddings 128",
         setup=finished_run),
    Case("compress-latency-seq-len-above-positions", ["compress", "--model_dir", "{ft}", "--output_dir", "{root}/c",
                                                      "--latency_seq_len", "300"],
         r"--latency_seq_len 300 exceeds .*Give --latency_seq_len 128 or less", setup=finished_run),
    Case("card-nan-weights", ["card", "--finetune_dir", "{sick}", "--output_dir", "{root}/rel",
                              "--measure_latency", "false"], r"The model .*sick has non-finite weights",
         setup=sick_model),
    Case("card-nan-metric", ["card", "--finetune_dir", "{ft}", "--output_dir", "{root}/rel",
                             "--measure_latency", "false"], r"non-finite numbers \(NaN/inf\) at .*test\.accuracy",
         setup=nan_metric_run),
    Case("compare-nan-weights", ["compare", "--old_model", "{root}/old", "--new_model", "{sick}", "--output_dir",
                                 "{root}/cmp", "--train_file", "{root}/d.csv", "--test_fraction", "0.5"],
         r"The new model '.*sick'.* has non-finite weights", setup=sick_pair),
    Case("compare-max-length-above-positions", ["compare", "--old_model", "{root}/old", "--new_model", "{sick}",
                                                "--output_dir", "{root}/cmp", "--train_file", "{root}/d.csv",
                                                "--max_length", "400"],
         r"--max_length 400 exceeds what the old model .* can read", setup=sick_pair),
]


@pytest.mark.parametrize("case", [c.param() for c in BROKEN_CASES])
def test_broken_models_and_inputs(case, tmp_path, monkeypatch, capsys):
    run_case(case, tmp_path, monkeypatch, capsys)


HUB_FILES: dict = {}

FINETUNE_MISSING_FILE = """
finetune:
  model: {root}/model
  train_file: {root}/data/train.csv
  mode: plain
"""

CASES = [
    # ---- bortify run: a stage's user error, bad recipes ---------------------------------------------------
    Case("run-stage-data-error", ["run", "{root}/r.yaml", "--output_dir", "{root}/run"],
         r"bortify run: error: .*train\.csv",
         setup=missing_train_file),
    Case("run-epsilon-quoted", ["run", "{root}/r.yaml"], r"`epsilon` must be float, got str '0\.1'",
         setup=recipe("extract: {source: embedded:all-MiniLM-L6-v2, epsilon: '0.1'}\n")),
    Case("run-depths-scalar", ["run", "{root}/r.yaml"], r"`depths` must be list of int, got int 1.*YAML list",
         setup=recipe("extract: {source: embedded:all-MiniLM-L6-v2, depths: 1}\n")),
    Case("run-heads-words", ["run", "{root}/r.yaml"], r"`heads` must be list of int, got list \['two'\]",
         setup=recipe("extract: {source: embedded:all-MiniLM-L6-v2, heads: [two]}\n")),
    Case("run-wrong-type-in-a-later-section", ["run", "{root}/r.yaml"],
         r"r\.yaml \[card\].*`latency_repeats` must be int",  # found before the extract stage starts
         setup=recipe("extract: {source: embedded:all-MiniLM-L6-v2}\ncard: {latency_repeats: five}\n")),
    Case("run-malformed-yaml", ["run", "{root}/r.yaml"], r"r\.yaml is not valid YAML at line 3, column 2",
         setup=recipe("extract:\n  epsilon: 0.1\n depths: [1]\n")),
    Case("run-missing-recipe", ["run", "{root}/nope.yaml"], r"nope\.yaml.*does not exist"),
    Case("run-unknown-section", ["run", "{root}/r.yaml"], r"Unknown section\(s\) \['fintune'\]",
         setup=recipe("extract: {}\nfintune: {}\n")),
    Case("run-section-not-a-mapping", ["run", "{root}/r.yaml"], r"section 'extract' must be a mapping",
         setup=recipe("extract: 5\n")),
    Case("run-token-in-recipe", ["run", "{root}/r.yaml"], r"`push\.token` holds a Hub token.*HF_TOKEN.*hf auth login",
         setup=recipe(f"card: {{}}\npush: {{repo_id: me/model, token: {TOKEN}}}\n")),
    Case("push-config-token", ["push", "{root}/rel", "--config", "{root}/r.yaml"], r"bortify push: error: .*Hub token",
         setup=recipe("push: {repo_id: me/model, hub_token: plain-text-secret}\n")),
    Case("card-config-wrong-type", ["card", "--config", "{root}/r.yaml", "--output_dir", "{root}/rel"],
         r"bortify card: error: .*`measure_latency` must be bool, got str 'yes'",
         setup=recipe("card: {finetune_dir: x, measure_latency: 'yes'}\n")),
    # ---- bortify card --overwrite never deletes what bortify did not make ---------------------------------
    Case("card-overwrite-run-dir", ["card", "--finetune_dir", "{ft}", "--output_dir", "{run}", "--overwrite",
                                    "--measure_latency", "false"],
         r"--output_dir .*run contains the input --finetune_dir", setup=finished_run),
    Case("card-overwrite-dot", ["card", "--finetune_dir", "{ft}", "--output_dir", ".", "--overwrite",
                                "--measure_latency", "false"],
         r"--output_dir \. contains the input --finetune_dir", setup=finished_run),
    Case("card-output-is-finetune-dir", ["card", "--finetune_dir", "{ft}", "--output_dir", "{ft}", "--overwrite",
                                         "--measure_latency", "false"],
         r"is the input --finetune_dir", setup=finished_run),
    Case("card-output-inside-input", ["card", "--finetune_dir", "{ft}", "--output_dir", "{ft}/release",
                                      "--measure_latency", "false"],
         r"is inside the input --finetune_dir", setup=finished_run),
    Case("card-overwrite-foreign-dir", ["card", "--finetune_dir", "{ft}", "--output_dir", "{root}/docs", "--overwrite",
                                        "--measure_latency", "false"],
         r"not a release folder made by `bortify card` \(it holds thesis\.tex",
         setup=lambda root: (write(root / "docs" / "thesis.tex", "years of work"), finished_run(root))[1]),
    # ---- bortify push: pickles are left out, and said so --------------------------------------------------
    Case("push-leaves-bin-out", ["push", "{release}", "--repo-id", "tester/cases", "--endpoint", "{endpoint}"],
         r"left out 1 file\(s\).*pytorch_model\.bin", rc=0, stream="any", setup=release_with_pickles,
         check=pushed_without_bin),  # marked slow below (a Hub server)
    # ---- Ctrl-C ---------------------------------------------------------------------------------------------
    Case("run-interrupted", ["run", "{root}/r.yaml", "--output_dir", "{root}/run"],
         r"bortify run: interrupted\. Finished outputs were kept; re-run the same command to resume\.", rc=130,
         setup=recipe("card: {finetune_dir: {root}/model, measure_latency: false}\n")),
]


def interrupt(monkeypatch):
    import bortify.hub.card_stage

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bortify.hub.card_stage, "build_release", stop)  # the card stage's library function


@pytest.fixture
def hub(monkeypatch):
    from huggingface_hub import constants

    from hub_server import HubServer

    server = HubServer(token=HUB_TOKEN).start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    HUB["url"] = server.url
    HUB_FILES["tester/cases"] = lambda: server.files("tester/cases")
    yield server
    server.stop()
    HUB.clear()
    HUB_FILES.clear()


@pytest.mark.parametrize("case", [c.param(pytest.mark.slow) if c.id.startswith("push-leaves") else c.param()
                                  for c in CASES])
def test_bad_input(case, tmp_path, monkeypatch, capsys, request):
    if case.id == "run-interrupted":
        interrupt(monkeypatch)
    if case.id.startswith("push-leaves"):
        request.getfixturevalue("hub")
    rc, out, err = run_case(case, tmp_path, monkeypatch, capsys)
    assert TOKEN not in out + err and "plain-text-secret" not in out + err and HUB_TOKEN not in out + err


# ---- releases leak nothing (bortify.hygiene): push refuses, the card cleans ----------------------------------------

LEAK_TOKEN = "hf_" + "LeakedInAFile5" * 3  # token-shaped, planted in a release file: refused, never echoed
LONG_TEXT_WORDS = 2000


def release(root: Path) -> dict:
    """A release folder made by the card stage (finetune report: max_length 40) and the push placeholders."""
    from bortify.hub.card_stage import run_stage

    finished_run(root)
    write(root / "run" / "finetune" / "report.json",
          '{"dataset": "embedded:rotten-tomatoes", "mode": "plain", "max_length": 40}')
    run_stage({"stage_dirs": {"finetune": str(root / "run" / "finetune")}, "output_dir": str(root / "release"),
               "measure_latency": False})
    return {"release": str(root / "release"), "endpoint": HUB.get("url", "")}


def release_plus(change) -> Callable:
    """setup: `release`, then `change(root, release_dir)` plants the problem."""
    def setup(root: Path) -> dict:
        values = release(root)
        change(root, root / "release")
        return values
    return setup


def _link_to_passwd(root, rel):
    os.symlink("/etc/passwd", rel / "notes.txt")


def _link_outside(root, rel):
    write(root / "private" / "diary.txt", "not for the Hub")
    (rel / "onnx").mkdir()
    os.symlink(root / "private" / "diary.txt", rel / "onnx" / "model.onnx")


def _linked_dir(root, rel):
    write(root / "private" / "diary.txt", "not for the Hub")
    os.symlink(root / "private", rel / "extra")


def _code_file(root, rel):
    write(rel / "modeling_bort.py", "import os\nos.system('echo hello')\n")


def _auto_map(root, rel):
    config = json.loads((rel / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_bort.BortModel"}
    (rel / "config.json").write_text(json.dumps(config))


def _onnx_with_stack_traces(root, rel):
    """An ONNX file whose node metadata carries a build path, as torch's dynamo exporter writes it."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    entry = node.metadata_props.add()
    entry.key, entry.value = "pkg.torch.onnx.stack_trace", f'File "{root}/src/modeling.py", line 3, in forward'
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    (rel / "onnx").mkdir()
    onnx.save(helper.make_model(graph), str(rel / "onnx" / "model.onnx"))


def _home_path_in_card(root, rel):
    with open(rel / "README.md", "a", encoding="utf-8") as f:
        f.write("\nTrained from /home/alice/data/reviews.csv.\n")


def _token_in_file(root, rel):
    write(rel / "card_evidence.json", json.dumps({"note": f"token {LEAK_TOKEN}"}))


def _windows_path(root, rel):
    write(rel / "notes.md", "Data in C:\\Users\\alice\\Documents\\train.csv\n")


def nothing_uploaded(root: Path) -> None:
    """No repository was created, or (a repository that existed) it holds only what creation put there."""
    try:
        files = HUB_FILES["tester/cases"]()
    except KeyError:  # the loopback Hub has no such repository: no network call made one
        return
    assert set(files) <= {".gitattributes"}, f"a refused push uploaded {sorted(files)}"


def _pushed_files() -> dict:
    return HUB_FILES["tester/cases"]()


def nothing_local_uploaded(root: Path) -> None:
    """The pushed files hold no local path, user name or token (bortify.hygiene.find_leaks on the uploaded bytes)."""
    import tempfile

    from bortify.hygiene import find_leaks

    files = _pushed_files()
    assert "model.safetensors" in files and "pytorch_model.bin" not in files
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / name).write_bytes(data)
        found = find_leaks(root / "release", list(files), secrets=[HUB_TOKEN],
                           contents={n: d for n, d in files.items()})
    assert not found, found
    for data in files.values():
        assert str(root).encode() not in data


def public_repo(root: Path) -> dict:
    from huggingface_hub import HfApi

    values = release(root)
    HfApi(endpoint=HUB["url"], token=HUB_TOKEN).create_repo("tester/cases", private=False)
    return values


def _card_dropped_hooks(root: Path) -> None:
    config = json.loads((root / "release" / "config.json").read_text())
    assert "auto_map" not in config and "custom_pipelines" not in config
    assert "auto_map" in json.loads((root / "run" / "finetune" / "config.json").read_text())  # the input is untouched


def _hooked_run(root: Path) -> dict:
    values = finished_run(root)
    path = root / "run" / "finetune" / "config.json"
    config = json.loads(path.read_text())
    config["auto_map"] = {"AutoConfig": "configuration_bort.BortConfig"}
    config["custom_pipelines"] = {"bort": {"impl": "pipeline_bort.BortPipeline"}}
    path.write_text(json.dumps(config))
    write(root / "run" / "finetune" / "report.json",
          '{"dataset": "embedded:rotten-tomatoes", "mode": "plain", "max_length": 40}')
    return values


def long_real_text(words: int = LONG_TEXT_WORDS) -> str:
    """A real English text of `words` words: the start of the method pages (docs/methods/), prose and all."""
    pages = sorted((Path(__file__).parents[1] / "docs" / "methods").glob("0*.md"))
    text = " ".join(page.read_text(encoding="utf-8") for page in pages).split()
    assert len(text) >= words
    return " ".join(text[:words])


def _clean_tokenizer_and_long_text(root: Path) -> None:
    """tokenizer_config.json without call leftovers, model_max_length the training length (40), and the card's
    usage line runs on a real 2,000-word text."""
    from transformers import pipeline

    from bortify.hygiene import TOKENIZER_CALL_KEYS

    rel = root / "release"
    source = json.loads((root / "run" / "finetune" / "tokenizer_config.json").read_text())
    assert {"is_local", "max_length", "stride", "truncation_strategy"} & set(source)  # the leftovers were there
    config = json.loads((rel / "tokenizer_config.json").read_text())
    assert not set(TOKENIZER_CALL_KEYS) & set(config), config
    assert config["model_max_length"] == 40
    readme = (rel / "README.md").read_text()
    assert "classifier(" in readme and "truncation=True))" in readme
    classifier = pipeline("text-classification", model=str(rel))
    text = long_real_text()
    assert len(classifier.tokenizer(text)["input_ids"]) > 2000  # far past the position table (128)
    out = classifier(text, truncation=True)  # the card's usage line
    assert out[0]["label"] in ("neg", "pos")


def _private_follow_up(root: Path) -> dict:
    shutil.copytree(TINY["model"], root / "model")
    recipe("card: {finetune_dir: {root}/model, measure_latency: false}\n"
           "push: {repo_id: me/model, private: true, revision: dev}\n")(root)
    return {}


HYGIENE_CASES = [
    # push: only regular files inside the folder, refused before any network call
    Case("push-symlink-to-passwd", ["push", "{release}", "--repo-id", "tester/cases", "--endpoint", "{endpoint}"],
         r"bortify push: error: .*symbolic link\(s\): notes\.txt.*regular files", setup=release_plus(_link_to_passwd),
         check=nothing_uploaded),
    Case("push-symlink-outside", ["push", "{release}", "--repo-id", "tester/cases", "--endpoint", "{endpoint}"],
         r"symbolic link\(s\): onnx/model\.onnx", setup=release_plus(_link_outside), check=nothing_uploaded),
    Case("push-symlinked-dir", ["push", "{release}", "--repo-id", "tester/cases", "--endpoint", "{endpoint}"],
         r"symbolic link\(s\): extra\b", setup=release_plus(_linked_dir), check=nothing_uploaded),
    # push: no code, no remote-code hooks
    Case("push-code-file", ["push", "{release}", "--repo-id", "tester/cases", "--endpoint", "{endpoint}"],
         r"holds code: modeling_bort\.py.*trust_remote_code", setup=release_plus(_code_file), check=nothing_uploaded),
    Case("push-auto-map", ["push", "{release}", "--repo-id", "tester/cases", "--endpoint", "{endpoint}"],
         r"config\.json has auto_map: a remote-code hook", setup=release_plus(_auto_map), check=nothing_uploaded),
    # push: no local paths, user names or tokens in any file, named with the byte offset
    Case("push-onnx-stack-trace", ["push", "{release}", "--repo-id", "tester/cases", "--endpoint", "{endpoint}"],
         r"Nothing was uploaded: onnx/model\.onnx at byte \d+: a local path", setup=release_plus(_onnx_with_stack_traces),
         check=nothing_uploaded),
    Case("push-home-path-in-card", ["push", "{release}", "--repo-id", "tester/cases", "--endpoint", "{endpoint}"],
         r"README\.md at byte \d+: a local path \(/home/NAME\)", setup=release_plus(_home_path_in_card),
         check=nothing_uploaded),
    Case("push-token-in-file", ["push", "{release}", "--repo-id", "tester/cases", "--endpoint", "{endpoint}"],
         r"card_evidence\.json at byte \d+: a Hub-token-shaped string", setup=release_plus(_token_in_file),
         check=nothing_uploaded),
    Case("push-windows-path", ["push", "{release}", "--repo-id", "tester/cases", "--endpoint", "{endpoint}"],
         r"notes\.md at byte 8: a local path \(C:\\Users\)", setup=release_plus(_windows_path), check=nothing_uploaded),
    # a clean release pushes, and what was uploaded holds nothing local
    Case("push-clean-release", ["push", "{release}", "--repo-id", "tester/cases", "--endpoint", "{endpoint}"],
         r"pushed \d+ files", rc=0, stream="any", setup=release, check=nothing_local_uploaded),
    # private stays private
    Case("push-private-into-public", ["push", "{release}", "--repo-id", "tester/cases", "--endpoint", "{endpoint}",
                                      "--private"],
         r"tester/cases exists and is public, and --private was asked: nothing was uploaded", setup=public_repo,
         check=nothing_uploaded),
    Case("run-private-follow-up", ["run", "{root}/r.yaml", "--output_dir", "{root}/run"],
         r"push later with `bortify push \S+ --repo-id me/model --private --revision dev`", rc=0, stream="any",
         setup=_private_follow_up),
    # the card: no remote-code hooks, a clean tokenizer whose model_max_length is the training length
    Case("card-drops-remote-code-hooks", ["card", "--finetune_dir", "{ft}", "--output_dir", "{root}/release",
                                          "--measure_latency", "false"],
         r"release folder:", rc=0, stream="any", setup=_hooked_run, check=_card_dropped_hooks),
    Case("card-clean-tokenizer-long-text", ["card", "--finetune_dir", "{ft}", "--output_dir", "{root}/release",
                                            "--measure_latency", "false"],
         r"classifier\(.*truncation=True\)", rc=0, stream="any", setup=_hooked_run,
         check=_clean_tokenizer_and_long_text),
]


@pytest.mark.parametrize("case", [c.param(pytest.mark.slow) if c.id.startswith("push-clean") else c.param()
                                  for c in HYGIENE_CASES])
def test_release_leaks_nothing(case, tmp_path, monkeypatch, capsys, request):
    if case.id.startswith("push-"):
        request.getfixturevalue("hub")
    rc, out, err = run_case(case, tmp_path, monkeypatch, capsys)
    assert LEAK_TOKEN not in out + err and HUB_TOKEN not in out + err
