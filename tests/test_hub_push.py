"""`bortify push` and the real huggingface_hub/transformers clients against the loopback Hub (tests/hub_server.py).

Clients run in subprocesses: huggingface_hub reads HF_ENDPOINT / HF_HUB_DISABLE_XET at import time, and
conftest.py sets HF_HUB_OFFLINE=1 for this process.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPORTS, build_run_dirs
from hub_server import DROP, HubServer, client_env

TOKEN = "hf_loopbackSECRETtoken_0123456789"
BORTIFY = [sys.executable, "-m", "bortify.cli"]
LOAD_SCRIPT = r"""
import hashlib, json, sys
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, pipeline
repo, revision = sys.argv[1], sys.argv[2]
config = AutoConfig.from_pretrained(repo, revision=revision)
tokenizer = AutoTokenizer.from_pretrained(repo, revision=revision)
model = AutoModelForSequenceClassification.from_pretrained(repo, revision=revision)
weights = hf_hub_download(repo, "model.safetensors", revision=revision)
card = ModelCard.load(hf_hub_download(repo, "README.md", revision=revision))
classify = pipeline("text-classification", model=repo, revision=revision)
print(json.dumps({
    "model_type": config.model_type, "id2label": config.id2label,
    "tokens": tokenizer("a gripping film")["input_ids"],
    "sha256": hashlib.sha256(open(weights, "rb").read()).hexdigest(),
    "card_tags": card.data.tags, "card_results": [[r.dataset_split, r.metric_type, r.metric_value] for r in card.data.eval_results or []],
    "prediction": classify("a gripping, beautifully acted film")[0],
    "siblings": sorted(s.rfilename for s in HfApi().model_info(repo, revision=revision).siblings),
}))
"""


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def hub():
    server = HubServer(token=TOKEN).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def release(tmp_path_factory, minilm_path):
    """A real release folder made by the card stage from a tiny fine-tuned checkpoint."""
    from bortify.hub.card_stage import run_stage

    root = tmp_path_factory.mktemp("release")
    # a Hub dataset, so the card's model-index carries results (a local one gets none)
    dirs = build_run_dirs(root, minilm_path, reports={"finetune": {**REPORTS["finetune"], "dataset_hub_id": "tester/reviews"}})
    run_stage({"stage_dirs": dirs, "output_dir": str(root / "card"), "repo_id": "tester/bort-tiny",
               "measure_latency": False})
    return root / "card"


@pytest.fixture(scope="module")
def outputs():
    """Every stdout/stderr a client produced here: scanned for the token at the end."""
    return []


def run_client(args, hub, hf_home, outputs, token=TOKEN, timeout=240):
    env = client_env(hub, os.environ, hf_home, token=token)
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=Path(__file__).parents[1])
    outputs.append(proc.stdout + proc.stderr)
    return proc


@pytest.mark.slow
def test_bortify_push_then_from_pretrained_round_trip(hub, release, tmp_path, outputs):
    proc = run_client([*BORTIFY, "push", str(release), "--repo-id", "tester/bort-tiny", "--commit-message", "first"],
                      hub, tmp_path / "hf", outputs)
    assert proc.returncode == 0, proc.stderr
    assert "pushed" in proc.stdout and "tester/bort-tiny" in proc.stdout
    remote = hub.files("tester/bort-tiny")
    local = {p.name for p in release.iterdir()}
    assert set(remote) == local | {".gitattributes"}
    assert remote["model.safetensors"] == (release / "model.safetensors").read_bytes()

    load = run_client([sys.executable, "-c", LOAD_SCRIPT, "tester/bort-tiny", "main"], hub, tmp_path / "hf2", outputs)
    assert load.returncode == 0, load.stderr[-3000:]
    got = json.loads(load.stdout.strip().splitlines()[-1])
    assert got["sha256"] == sha256(release / "model.safetensors")  # byte for byte
    assert got["model_type"] == "bert" and set(got["id2label"].values()) == {"rotten", "fresh"}
    assert got["prediction"]["label"] in {"rotten", "fresh"} and 0 <= got["prediction"]["score"] <= 1
    assert {"bort", "bortify"} <= set(got["card_tags"])
    assert ["test", "accuracy", 0.6317] in got["card_results"]
    from transformers import AutoTokenizer

    assert got["tokens"] == AutoTokenizer.from_pretrained(release)("a gripping film")["input_ids"]
    # LFS for the weights, regular git for the card: both paths of the upload protocol were used.
    assert ("PUT", "lfs-put", 200) in hub.requests and ("POST", "commit", 200) in hub.requests


@pytest.mark.slow
def test_huggingface_hub_upload_and_branch_push(hub, release, tmp_path, outputs):
    """The plain huggingface_hub API against the server, then `bortify push --revision --private` to a branch."""
    script = (
        "import sys; from huggingface_hub import HfApi; api = HfApi();"
        "print(api.whoami()['name']);"
        "api.create_repo('tester/raw', exist_ok=True);"
        "info = api.upload_folder(repo_id='tester/raw', folder_path=sys.argv[1], commit_message='raw');"
        "print(info.oid);"
        # transformers' own push_to_hub goes through the same API
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer;"
        "AutoModelForSequenceClassification.from_pretrained(sys.argv[1]).push_to_hub('tester/via-transformers');"
        "AutoTokenizer.from_pretrained(sys.argv[1]).push_to_hub('tester/via-transformers')"
    )
    proc = run_client([sys.executable, "-c", script, str(release)], hub, tmp_path / "hf", outputs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[0] == "tester"
    assert hub.files("tester/raw")["model.safetensors"] == (release / "model.safetensors").read_bytes()
    via = hub.files("tester/via-transformers")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(via)

    # NAME alone goes to the token's own namespace (tester/).
    proc = run_client([*BORTIFY, "push", str(release), "--repo-id", "branchy", "--revision", "dev", "--private"],
                      hub, tmp_path / "hf", outputs)
    assert proc.returncode == 0, proc.stderr
    assert set(hub.files("tester/branchy", "main")) == {".gitattributes"}  # main untouched
    assert "model.safetensors" in hub.files("tester/branchy", "dev")
    assert hub.state.repos[("model", "tester/branchy")].private
    load = run_client([sys.executable, "-c", LOAD_SCRIPT, "tester/branchy", "dev"], hub, tmp_path / "hf3", outputs)
    assert load.returncode == 0, load.stderr[-3000:]
    assert json.loads(load.stdout.strip().splitlines()[-1])["sha256"] == sha256(release / "model.safetensors")
    # A second push to the existing branch (create_branch exist_ok) updates it; main stays untouched.
    changed = tmp_path / "changed"
    shutil.copytree(release, changed)
    (changed / "README.md").write_text((changed / "README.md").read_text() + "\nSecond revision.\n")
    proc = run_client([*BORTIFY, "push", str(changed), "--repo-id", "tester/branchy", "--revision", "dev"],
                      hub, tmp_path / "hf", outputs)
    assert proc.returncode == 0, proc.stderr
    assert hub.files("tester/branchy", "dev")["README.md"].endswith(b"Second revision.\n")
    assert set(hub.files("tester/branchy", "main")) == {".gitattributes"}


@pytest.mark.slow
def test_transient_5xx_is_retried_and_push_completes(hub, release, tmp_path, outputs):
    hub.fail_next("create-repo", 1, 502)
    hub.fail_next("preupload", 1, 500)  # retried inside huggingface_hub (http_backoff)
    hub.fail_next("commit", 1, 503)     # retried by bortify push (the commit POST is not retried by the client)
    hub.fail_next("commit", 1, DROP)    # a dropped connection, then success
    proc = run_client([*BORTIFY, "push", str(release), "--repo-id", "tester/flaky", "--retry_wait", "0.1"],
                      hub, tmp_path / "hf", outputs)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("transient error") == 3  # create repo once, commit twice
    assert "RemoteProtocolError" in proc.stderr or "ReadError" in proc.stderr
    commits = [status for method, route, status in hub.requests if route == "commit"]
    assert commits[-3:] == [503, 0, 200]
    preuploads = [status for method, route, status in hub.requests if route == "preupload"]
    assert 500 in preuploads and preuploads[-1] == 200
    assert hub.files("tester/flaky")["model.safetensors"] == (release / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_failed_push_leaves_remote_unchanged(hub, release, tmp_path, outputs):
    proc = run_client([*BORTIFY, "push", str(release), "--repo-id", "tester/atomic"], hub, tmp_path / "hf", outputs)
    assert proc.returncode == 0, proc.stderr
    before = hub.files("tester/atomic")
    changed = tmp_path / "changed"
    shutil.copytree(release, changed)
    (changed / "README.md").write_text((changed / "README.md").read_text() + "\nA change that must not land.\n")
    hub.fail_next("commit", 10, 503)
    proc = run_client([*BORTIFY, "push", str(changed), "--repo-id", "tester/atomic", "--max_retries", "1",
                       "--retry_wait", "0.05"], hub, tmp_path / "hf", outputs)
    hub.state.failures.pop("commit", None)
    assert proc.returncode == 2 and "503" in proc.stderr and "Traceback" not in proc.stderr
    assert hub.files("tester/atomic") == before  # unchanged, not half-written


@pytest.mark.slow
def test_bad_token_and_explicit_token_never_leak(hub, release, tmp_path, outputs):
    wrong = "hf_WRONGtoken_should_not_appear_42"
    proc = run_client([*BORTIFY, "push", str(release), "--repo-id", "tester/denied", "--token", wrong],
                      hub, tmp_path / "hf", outputs, token=None)
    assert proc.returncode == 2 and "401" in proc.stderr
    assert wrong not in proc.stdout + proc.stderr
    proc = run_client([*BORTIFY, "push", str(release), "--repo-id", "tester/explicit", "--token", TOKEN],
                      hub, tmp_path / "hf", outputs, token=None)
    assert proc.returncode == 0, proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_token_never_in_output_or_files(hub, release, outputs, tmp_path_factory):
    """Runs last in this module: scan every client output and every file the tests wrote."""
    assert outputs, "the push tests above must have run"
    assert not [o for o in outputs if TOKEN in o]
    base = Path(tmp_path_factory.getbasetemp())
    leaked = [p for p in base.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaked == []
    # and nothing the server stored contains it either
    for repo in hub.state.repos.values():
        for files in repo.commits.values():
            assert not any(TOKEN.encode() in blob.data for blob in files.values())


# ---- no network needed ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_push_refuses_folders_that_are_not_releases(tmp_path, release):
    from bortify.hub.push import PushError, check_release_folder, push_folder

    with pytest.raises(PushError, match="not a directory"):
        check_release_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PushError, match="no config.json"):
        check_release_folder(tmp_path / "empty")
    no_card = tmp_path / "no_card"
    shutil.copytree(release, no_card)
    (no_card / "README.md").unlink()
    with pytest.raises(PushError, match="no README.md model card.*bortify card"):
        push_folder(no_card, "tester/x", token="unused")
    no_weights = tmp_path / "no_weights"
    shutil.copytree(release, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(PushError, match="no weights"):
        check_release_folder(no_weights)
    with pytest.raises(PushError, match="NAMESPACE/NAME"):
        push_folder(release, "a/b/c", token="unused")
    with pytest.raises(PushError, match="NAMESPACE/NAME"):
        push_folder(release, "bad name", token="unused")
    files = check_release_folder(release)
    assert "model.safetensors" in files and "README.md" in files and not any("stage_done" in f for f in files)


def test_retry_policy_backs_off_on_transient_errors_only():
    from bortify.hub.push import is_transient, with_retries

    class Response:
        def __init__(self, status):
            self.status_code = status

    class HTTPError(Exception):
        def __init__(self, status):
            super().__init__(f"status {status}")
            self.response = Response(status)

    class ConnectError(Exception):
        pass

    assert is_transient(HTTPError(503)) and is_transient(HTTPError(429)) and is_transient(ConnectError())
    assert not is_transient(HTTPError(404)) and not is_transient(ValueError())
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise HTTPError(502)
        return "done"

    assert with_retries(flaky, "x", max_retries=4, wait=0.5, sleep=sleeps.append) == ("done", 3)
    assert sleeps == [0.5, 1.0]
    with pytest.raises(HTTPError):
        with_retries(lambda: (_ for _ in ()).throw(HTTPError(404)), "x", max_retries=4, wait=0.5, sleep=sleeps.append)
    assert sleeps == [0.5, 1.0]  # a 404 is not retried
    with pytest.raises(HTTPError):
        with_retries(lambda: (_ for _ in ()).throw(HTTPError(500)), "x", max_retries=2, wait=1, sleep=sleeps.append)
    assert sleeps[2:] == [1, 2]


@pytest.mark.slow
def test_push_stage_skips_without_a_hub(tmp_path, release, monkeypatch):
    from bortify.hub.push_stage import run_stage
    from bortify.recipes import RecipeError

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no saved login
    summary = run_stage({"repo_id": "tester/demo", "model_dir": str(release), "output_dir": str(tmp_path / "push")})
    assert summary["skipped"] and summary["reason"].startswith("skipped: no Hub configured")
    assert json.loads((tmp_path / "push" / "report.json").read_text())["skipped"] is True
    with pytest.raises(RecipeError, match="repo_id"):
        run_stage({"model_dir": str(release), "output_dir": str(tmp_path / "push2")})


@pytest.mark.slow
def test_push_leaves_pickles_out_and_fills_in_the_repo_id(tmp_path, minilm_path, monkeypatch):
    """In-process against the loopback Hub: a .bin beside the safetensors (and other pickle/state files) is not
    uploaded and is named; a card rendered without a repo id gets the real one in the uploaded copy only."""
    from huggingface_hub import constants

    from bortify.hub.card_stage import run_stage
    from bortify.hub.push import push_folder

    dirs = build_run_dirs(tmp_path, minilm_path, stages=("finetune",))
    rel = tmp_path / "card"
    run_stage({"stage_dirs": dirs, "output_dir": str(rel), "measure_latency": False})  # no repo_id
    assert 'model="YOUR_NAME/MODEL_NAME"' in (rel / "README.md").read_text()
    for name in ("pytorch_model.bin", "optimizer.pt", "rng_state.pth", "scheduler.pt", "extra.pkl", "last.ckpt"):
        (rel / name).write_bytes(b"pickle, not for release")
    before = {p.name: p.read_bytes() for p in rel.iterdir()}
    server = HubServer(token=TOKEN).start()
    logged = []
    try:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        result = push_folder(rel, "filled", token=TOKEN, endpoint=server.url, log=logged.append)
        remote = server.files("tester/filled")
    finally:
        server.stop()
    assert set(remote) == {n for n in before if not n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))} | {".gitattributes"}
    assert sorted(result.left_out) == sorted(["pytorch_model.bin", "optimizer.pt", "rng_state.pth", "scheduler.pt",
                                              "extra.pkl", "last.ckpt"])
    assert any("left out 6 file(s)" in line and "pytorch_model.bin" in line for line in result.summary_lines())
    assert any("pytorch_model.bin" in m for m in logged)
    card = remote["README.md"].decode()
    assert 'model="tester/filled"' in card and "YOUR_NAME/MODEL_NAME" not in card  # NAME resolved to NS/NAME
    assert "Replace `" not in card and "bortify:repo-note" not in card and "## How to load\n\n```python" in card
    assert {p.name: p.read_bytes() for p in rel.iterdir()} == before  # the user's folder is untouched
