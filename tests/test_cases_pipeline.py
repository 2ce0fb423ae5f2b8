"""Bad-input case table for `bortify run`, `card` and `push` (tests/casetable.py harness).

Every row runs the real command in-process in a scratch directory and asserts the exit code, a message naming
the problem on stderr, no traceback, no training, and that every file that existed before is byte-identical.
Checkpoints are tiny and real: a random 2-layer BertForSequenceClassification with splade-tiny's tokenizer.
"""

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from casetable import Case, run_case  # noqa: E402

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
