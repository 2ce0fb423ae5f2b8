"""`bortify push DIR --repo-id NS/NAME`: upload a release folder (checkpoint + model card) to the Hub.

One `upload_folder` call is one commit, and a commit on the Hub is atomic: a push that fails leaves the
remote as it was, a push that succeeds leaves it complete. Transient failures (5xx, 408/429, dropped
connections) are retried with exponential backoff: huggingface_hub already retries its own upload
requests (preupload, LFS batch and PUT use its `http_backoff`); the repo creation and the commit itself
are not retried by it, so `push_folder` re-runs the whole step. Re-running `upload_folder` is cheap: LFS
objects already on the server are not uploaded again.

The token comes from `--token`, else `HF_TOKEN`, else the saved login (`hf auth login`). It is never
printed, logged or written anywhere by bortify; error messages are scrubbed of it.

What is uploaded: the folder's files minus Trainer/run bookkeeping and every pickle-based file (`*.bin`,
`*.pt`, `*.pth`, `*.pkl`, `*.ckpt`, optimizer/scheduler/RNG states): a release carries safetensors weights
only, and the files left out are named in the output.

What is refused, before any network call (bortify.hygiene): a symbolic link anywhere in the folder (only regular
files inside it are uploaded, never a link's target); code (`*.py`, `*.so`, `*.sh`, ...) and remote-code hooks
(`auto_map`, `custom_pipelines` in config.json or tokenizer_config.json), since a release loads without
trust_remote_code; and any file holding a local path (the home directory, the folder's own path, /tmp, /home/NAME,
/root, C:\\Users), the user name as a path component, or a Hub-token-shaped string: the error names the file and
the byte offset. `--private` keeps a repository private: a push with --private into an existing public repository
is refused. A card rendered without a repository id shows the
placeholder `YOUR_NAME/MODEL_NAME` in its how-to-load snippet; the uploaded copy of README.md has the real
repository id there (the folder itself is never modified).
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, TypeVar

from bortify.reports import PushReport, left_out_text
from bortify.utils import TOKENIZER_FILES, redact_secrets

T = TypeVar("T")

# Files in a stage directory that are not part of a release (Trainer state, run bookkeeping).
IGNORE_PATTERNS = [
    "checkpoint-*", "checkpoint-*/**", "optimizer.pt", "scheduler.pt", "rng_state*.pth", "trainer_state.json",
    "training_args.bin", "stage_done.json", "*.stage_done.json", ".*", "**/.*",
]
# Pickle-based files (unpickling runs code) and optimizer/scheduler/RNG states: never uploaded. Weights go up
# as safetensors only.
UNSAFE_PATTERNS = [
    "*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.joblib", "optimizer*", "scheduler*", "rng_state*",
]
# Code: a release is weights, tokenizer files and a card; transformers never needs code from it (no
# trust_remote_code), so a file of code in the folder is refused by name rather than uploaded.
CODE_PATTERNS = [
    "*.py", "*.pyc", "*.pyo", "*.pyd", "*.so", "*.so.*", "*.dylib", "*.dll", "*.exe", "*.sh", "*.bash", "*.zsh",
    "*.fish", "*.bat", "*.cmd", "*.ps1", "*.jar", "*.ipynb",
]
REPO_PLACEHOLDER = "YOUR_NAME/MODEL_NAME"  # the card's how-to-load snippet before the repository is known
# The card's sentence about the placeholder (bortify.hub.card templates), dropped once the id is filled in.
REPO_NOTE = re.compile(r"<!-- bortify:repo-note -->.*?<!-- /bortify:repo-note -->\n*", re.S)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
# Exception class names of connection-level failures (httpx flavours that huggingface_hub uses).
TRANSIENT_EXCEPTIONS = {"TimeoutException", "NetworkError", "RemoteProtocolError", "ConnectError", "ReadError",
                        "ConnectionError", "TimeoutError"}
REPO_ID = re.compile(r"^([A-Za-z0-9][\w.\-]*/)?[A-Za-z0-9][\w.\-]*$")  # NAME alone: the token's user namespace


class PushError(ValueError):
    """The push cannot start or failed; the message says what to fix."""


@dataclass
class PushArguments:
    model_dir: str = field(metadata={"help": "Release folder to upload: config.json, model.safetensors, tokenizer "
                                             "files and README.md (the card). `bortify card` / the card stage makes one."})
    repo_id: str = field(metadata={"help": "Target repository on the Hub, NAMESPACE/NAME, or NAME for your own namespace "
                                           "(created if missing)."})
    private: bool = field(default=False, metadata={"help": "Create the repository as private (no effect if it exists)."})
    revision: Optional[str] = field(default=None, metadata={
        "help": "Branch to push to (created from main if missing). Default: main."})
    commit_message: Optional[str] = field(default=None, metadata={
        "help": "Commit message (default: 'Upload NS/NAME with bortify')."})
    token: Optional[str] = field(default=None, metadata={
        "help": "Hub token with write access. Prefer leaving this unset: then HF_TOKEN or the saved login "
                "(`hf auth login`) is used, and the token stays out of shell history. Never printed."})
    endpoint: Optional[str] = field(default=None, metadata={
        "help": "Hub endpoint URL (default: $HF_ENDPOINT or https://huggingface.co)."})
    max_retries: int = field(default=4, metadata={
        "help": "Retries of a step (create repo, branch, commit) after a transient error (5xx, 408, 429, connection)."})
    retry_wait: float = field(default=1.0, metadata={
        "help": "Seconds before the first retry; doubles each time (capped at 30 s)."})


@dataclass
class PushResult:
    repo_id: str
    revision: str
    commit_oid: str
    commit_url: str
    repo_url: str
    files: list[str]
    attempts: int
    left_out: list[str] = field(default_factory=list)  # files of the folder not uploaded (see UNSAFE_PATTERNS)

    def summary_lines(self) -> list[str]:
        return self.report().summary_lines()

    def report(self, **more) -> PushReport:
        return PushReport(repo_id=self.repo_id, revision=self.revision, commit_oid=self.commit_oid,
                          commit_url=self.commit_url, repo_url=self.repo_url, files=self.files, left_out=self.left_out,
                          attempts=self.attempts, **more)


def check_release_folder(model_dir: str | Path) -> list[str]:
    """Raise PushError unless `model_dir` is a loadable checkpoint with a card; return the files to upload."""
    path = Path(model_dir)
    if not path.is_dir():
        raise PushError(f"{path} is not a directory. Pass the release folder that `bortify card` wrote "
                        "(or the card stage's output directory of `bortify run`).")
    check_no_links(path)
    config = path / "config.json"
    if not config.is_file():
        raise PushError(f"{path} is not a loadable checkpoint: no config.json. Save the model with "
                        "model.save_pretrained(DIR), or point at the card stage's output.")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise PushError(f"{config} is not a valid transformers config ({exc}).") from exc
    if not model_type:
        raise PushError(f"{config} has no model_type; it was not written by save_pretrained.")
    check_no_code(path)
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        hint = " (found pytorch_model.bin: re-save with safe_serialization)" if (path / "pytorch_model.bin").exists() else ""
        raise PushError(f"{path} has no weights: expected model.safetensors or model.safetensors.index.json{hint}.")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise PushError(f"{path} has no tokenizer files ({', '.join(TOKENIZER_FILES)}): users could not run "
                        "pipeline() on it. Save the tokenizer with tokenizer.save_pretrained(DIR).")
    readme = path / "README.md"
    if not readme.is_file():
        raise PushError(f"{path} has no README.md model card. Write one with `bortify card --output_dir {path} ...` "
                        "(the card stage of `bortify run` does it for you).")
    from huggingface_hub import metadata_load

    try:
        metadata = metadata_load(readme)
    except Exception as exc:  # yaml errors
        raise PushError(f"{readme} has unreadable YAML metadata: {exc}") from exc
    if not metadata:
        raise PushError(f"{readme} has no YAML metadata block (license, tags, model-index); render it with `bortify card`.")
    return release_files(path)[0]


def check_no_links(path: Path) -> None:
    """Refuse a folder with a symbolic link anywhere in it (a link to /etc/passwd or a file outside the folder
    would upload its target's content)."""
    import os

    links = []
    for dirpath, dirnames, filenames in os.walk(path):  # does not descend into linked directories
        for name in dirnames + filenames:
            if os.path.islink(os.path.join(dirpath, name)):
                links.append(Path(dirpath, name).relative_to(path).as_posix())
    if links:
        shown = ", ".join(links[:8]) + (" ..." if len(links) > 8 else "")
        raise PushError(f"{path} holds symbolic link(s): {shown}. A release uploads regular files inside its folder "
                        "only: replace each link by a copy of the file (or remove it), then push again.")


def check_no_code(path: Path) -> None:
    """Refuse code files and remote-code hooks: a release must load without trust_remote_code."""
    import fnmatch

    from bortify.hygiene import REMOTE_CODE_KEYS

    files = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
    code = [n for n in files if not _ignored(n) and any(fnmatch.fnmatch(n.rsplit("/", 1)[-1], pat)
                                                        for pat in CODE_PATTERNS)]
    if code:
        shown = ", ".join(code[:8]) + (" ..." if len(code) > 8 else "")
        raise PushError(f"{path} holds code: {shown}. A release carries no code (users load it without "
                        "trust_remote_code): remove these files from the folder, then push again.")
    for name in ("config.json", "tokenizer_config.json"):
        try:
            data = json.loads((path / name).read_text(encoding="utf-8")) if (path / name).is_file() else {}
        except (OSError, json.JSONDecodeError):
            continue
        hooks = [k for k in REMOTE_CODE_KEYS if isinstance(data, dict) and k in data]
        if hooks:
            raise PushError(f"{path / name} has {' and '.join(hooks)}: a remote-code hook (transformers would import "
                            "code from the repository). Re-make the release with `bortify card`, which drops them, "
                            f"or delete the key(s) from {name}.")


def _ignored(name: str) -> bool:
    import fnmatch

    base = name.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(name, pat) or fnmatch.fnmatch(base, pat) for pat in IGNORE_PATTERNS)


def check_no_leaks(model_dir: str | Path, files: list[str], repo_id: str, token: str | None = None) -> None:
    """Refuse files (as they will be uploaded) holding a local path, the user name or a token (bortify.hygiene)."""
    from bortify.hygiene import find_leaks, leak_text

    contents = {}
    if "README.md" in files:
        contents["README.md"] = readme_upload_text(Path(model_dir) / "README.md", repo_id).encode("utf-8")
    found = find_leaks(model_dir, files, secrets=[token] if token else [], contents=contents)
    if found:
        raise PushError(f"Nothing was uploaded: {leak_text(found)}. A release must not carry local paths, user "
                        "names or tokens: re-make the folder with `bortify card` (its card and ONNX files are "
                        "cleaned), or edit the named file(s), then push again.")


def readme_upload_text(readme: Path, repo_id: str) -> str:
    """README.md as uploaded: the repository placeholder replaced by `repo_id`."""
    text = readme.read_text(encoding="utf-8")
    return REPO_NOTE.sub("", text).replace(REPO_PLACEHOLDER, repo_id) if REPO_PLACEHOLDER in text else text


def release_files(model_dir: str | Path) -> tuple[list[str], list[str]]:
    """(files to upload, files left out) of a folder, as posix paths relative to it.

    Left out: hidden files, Trainer/run bookkeeping (IGNORE_PATTERNS) and pickle-based files or training
    states (UNSAFE_PATTERNS), matched on the path and on the file name.
    """
    import fnmatch

    path = Path(model_dir)
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    keep, left_out = [], []
    for name in files:
        base = name.rsplit("/", 1)[-1]
        skip = any(fnmatch.fnmatch(name, pat) or fnmatch.fnmatch(base, pat) for pat in IGNORE_PATTERNS + UNSAFE_PATTERNS)
        (left_out if skip else keep).append(name)
    return keep, left_out


def commit_operations(model_dir: str | Path, files: list[str], repo_id: str) -> list:
    """One CommitOperationAdd per file; README.md's repository placeholder becomes `repo_id` in the uploaded copy."""
    from huggingface_hub import CommitOperationAdd

    ops = []
    for name in files:
        source = Path(model_dir) / name
        if name == "README.md":
            ops.append(CommitOperationAdd(name, readme_upload_text(source, repo_id).encode("utf-8")))
            continue
        ops.append(CommitOperationAdd(name, str(source)))
    return ops


def resolve_token(token: str | None) -> str | None:
    """An explicit token, else HF_TOKEN, else the saved login."""
    if token:
        return token
    from huggingface_hub import get_token

    return get_token()


def is_transient(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        return status in TRANSIENT_STATUS
    return any(cls.__name__ in TRANSIENT_EXCEPTIONS for cls in type(exc).__mro__)


def with_retries(step: Callable[[], T], what: str, *, max_retries: int, wait: float,
                 sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] | None = None) -> tuple[T, int]:
    """Run `step`, retrying transient failures with exponential backoff. -> (result, attempts)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return step(), attempt
        except Exception as exc:
            if attempt > max_retries or not is_transient(exc):
                raise
            delay = min(wait * 2 ** (attempt - 1), 30.0)
            if log:
                log(f"{what}: transient error ({type(exc).__name__}, status "
                    f"{getattr(getattr(exc, 'response', None), 'status_code', '-')}); retry {attempt}/{max_retries} in {delay:.1f} s")
            sleep(delay)


def redact(text: str, token: str | None) -> str:
    from bortify.utils import redact_secrets

    return redact_secrets(text.replace(token, "***") if token else text)


def push_folder(model_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                commit_message: str | None = None, token: str | None = None, endpoint: str | None = None,
                max_retries: int = 4, retry_wait: float = 1.0, log: Callable[[str], None] | None = None) -> PushResult:
    """Create `repo_id` if needed (and the branch `revision`), then upload `model_dir` as one commit."""
    if not REPO_ID.match(repo_id or ""):
        raise PushError(f"--repo-id must look like NAMESPACE/NAME or NAME (e.g. my-user/bort-sentiment), got {repo_id!r}.")
    check_release_folder(model_dir)
    files, left_out = release_files(model_dir)
    if left_out and log:
        log(left_out_text(left_out))
    check_no_leaks(model_dir, files, repo_id)
    token = resolve_token(token)
    if not token:
        raise PushError("No Hugging Face token found: set HF_TOKEN, run `hf auth login`, or pass --token.")
    check_no_leaks(model_dir, files, repo_id, token)  # the token itself, wherever it came from
    from huggingface_hub import HfApi, constants

    if constants.is_offline_mode():
        raise PushError("HF_HUB_OFFLINE is set: unset it to push to the Hub.")
    api = HfApi(endpoint=endpoint, token=token)
    message = commit_message or f"Upload {repo_id} with bortify"
    retry = dict(max_retries=max_retries, wait=retry_wait, log=log)
    try:
        repo_url, _ = with_retries(lambda: api.create_repo(repo_id, private=private or None, exist_ok=True), "create repo", **retry)
        repo_id = getattr(repo_url, "repo_id", None) or repo_id  # NAME alone -> NAMESPACE/NAME
        if private:  # create_repo does not change an existing repository's visibility
            info, _ = with_retries(lambda: api.repo_info(repo_id), "repo info", **retry)
            if getattr(info, "private", None) is False:
                raise PushError(f"{repo_id} exists and is public, and --private was asked: nothing was uploaded. "
                                "Make the repository private on the Hub (Settings) first, or push to a new repository.")
        if revision and revision != "main":
            with_retries(lambda: api.create_branch(repo_id, branch=revision, exist_ok=True), "create branch", **retry)
        # One commit of exactly the listed files (operations rebuilt per attempt, as upload_folder does).
        info, attempts = with_retries(
            lambda: api.create_commit(repo_id=repo_id, operations=commit_operations(model_dir, files, repo_id),
                                      revision=revision, commit_message=message),
            "upload", **retry)
    except PushError:
        raise
    except Exception as exc:
        raise PushError(redact(f"Push to {repo_id} failed ({type(exc).__name__}): {exc}", token)) from None
    return PushResult(repo_id=repo_id, revision=revision or "main", commit_oid=info.oid, commit_url=info.commit_url,
                      repo_url=str(repo_url), files=files, attempts=attempts, left_out=left_out)


def hub_configured(token: str | None) -> str | None:
    """None when a push can be attempted, else the reason it cannot (offline mode, no token)."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    if not resolve_token(token):
        return "no token (set HF_TOKEN or run `hf auth login`)"
    return None


def push_release(args: PushArguments, *, skip_without_hub: bool = False):
    """`bortify push` and the push stage: upload `args.model_dir`; -> bortify.reports.PushReport.

    With `skip_without_hub` (what `bortify run` passes) and no Hub configured (no token from HF_TOKEN or a saved
    login, or HF_HUB_OFFLINE set), the report says "skipped: no Hub configured" instead of failing, so the demo
    stays offline; the pipeline does not record a skipped stage as done, so a later run with a token pushes. A
    configured Hub that fails is an error, as it should be."""
    reason = hub_configured(args.token) if skip_without_hub else None
    if reason:
        return PushReport(skipped=True, reason=f"skipped: no Hub configured ({reason})", repo_id=args.repo_id,
                          model_dir=args.model_dir, private=args.private or None, revision=args.revision)
    logged: list[str] = []

    def log(message: str) -> None:
        logged.append(message)
        print(f"[bortify push] {message}", file=sys.stderr, flush=True)

    result = push_folder(args.model_dir, args.repo_id, private=args.private, revision=args.revision,
                         commit_message=args.commit_message, token=args.token, endpoint=args.endpoint,
                         max_retries=args.max_retries, retry_wait=args.retry_wait, log=log)
    # The token is in no field; redacting anyway keeps a future field from leaking it.
    return PushReport.make(redact_secrets(result.report(skipped=False, retries_logged=logged, private=args.private or None).to_dict()),
                           model_dir=args.model_dir)


def main(argv: list[str] | None = None) -> int:
    """`bortify push DIR --repo-id NS/NAME` (bortify.stages: the push entry)."""
    from bortify.pipeline import run_command

    return run_command("push", argv)
