"""Release hygiene: what a release may not carry, and Trainer options that would publish behind `bortify push`'s back.

The checks for `bortify push` (bortify.hub.push), the card stage (bortify.hub.card_stage) and the Trainer
pass-through options of pretrain and finetune. It imports nothing from bortify, so any floor may use it.

- `refuse_hub_training_args`: `push_to_hub`, every `hub_*` field and a networked `report_to` in TrainingArguments
  would make the Trainer create a repository and upload weights, or send logs to a tracking service, bypassing
  every check of `bortify push`; and `hub_token` would be pickled into `training_args.bin`. They are refused with
  a message pointing at `bortify push`.
- `find_leaks`: local paths (the home directory, the folder's own absolute path, /tmp, /home/NAME, /root,
  C:\\Users\\NAME, /Users/NAME), the user name as a path component, and Hub-token-shaped strings, in every file about
  to be uploaded; `bortify push` refuses with the file and byte offset.
- `clean_release_config` / `clean_tokenizer_config`: a release carries no remote-code hooks (`auto_map`,
  `custom_pipelines`), and its tokenizer_config.json no leftovers of the calls that made it.
"""

from __future__ import annotations

import getpass
import os
import re
from pathlib import Path
from typing import Any, Iterable

# TrainingArguments that publish (push to the Hub) or hold a Hub credential.
HUB_ARGUMENT_PREFIX = "hub_"
PUSH_ARGUMENTS = ("push_to_hub", "push_to_hub_model_id", "push_to_hub_organization", "push_to_hub_token")
# report_to integrations that write locally only; every other one sends the run's logs over the network.
LOCAL_REPORT_TO = ("none", "tensorboard")
PUSH_HINT = ("the Trainer would upload behind `bortify push`'s checks. Train locally, then publish the release "
             "folder with `bortify push DIR --repo-id NS/NAME` (token from HF_TOKEN or `hf auth login`)")

# Keys of a config.json that make transformers import code from the repository (trust_remote_code).
REMOTE_CODE_KEYS = ("auto_map", "custom_pipelines")
# tokenizer_config.json keys that are arguments of the calls that made or used the tokenizer, not settings of it.
TOKENIZER_CALL_KEYS = (
    "is_local", "local_files_only", "max_length", "stride", "truncation_strategy", "padding_strategy",
    "pad_to_multiple_of", "return_tensors", "cache_dir", "force_download", "resume_download", "proxies", "token",
    "use_auth_token", "revision", "subfolder", "trust_remote_code", "_commit_hash", "name_or_path", "auto_map",
    "_from_auto", "padding", "truncation",
)
TOKEN_SHAPED = re.compile(rb"hf_[A-Za-z0-9]{30,}")


class LeakError(ValueError):
    """A file about to be released holds a local path, a user name or a token; the message names file and offset."""


# ---- Trainer pass-through options ------------------------------------------------------------------------------

def networked_report_to(value: Any) -> list[str]:
    """The integrations of a `report_to` value that are not local-only (empty: fine)."""
    if value is None:
        return []
    names = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else [value]
    return [str(n) for n in names if str(n) not in LOCAL_REPORT_TO]


def hub_training_problems(values: dict, defaults: dict | None = None) -> list[str]:
    """The publishing options set in `values` (TrainingArguments fields -> values). With `defaults`, a field equal
    to its default is not a problem (a parsed TrainingArguments has every field)."""
    defaults = defaults or {}
    problems = []
    for key, value in values.items():
        if key in defaults and value == defaults[key]:
            continue
        if key.startswith(HUB_ARGUMENT_PREFIX) or key in PUSH_ARGUMENTS:
            if key == "push_to_hub" and not value:
                continue
            problems.append(f"{key}=***" if "token" in key else f"{key}={value!r}")
        elif key == "report_to":
            networked = networked_report_to(value)
            if networked:
                problems.append(f"report_to={networked!r} (only {' / '.join(LOCAL_REPORT_TO)} stay on this machine)")
    return problems


def refuse_hub_training_args(values: dict, where: str, defaults: dict | None = None) -> None:
    """Raise ValueError naming each publishing option in `values` (see `hub_training_problems`)."""
    problems = hub_training_problems(values, defaults)
    if problems:
        raise ValueError(f"{where} sets {', '.join(problems)}: {PUSH_HINT}.")


def training_arguments_defaults(cls) -> dict:
    """Field name -> default of a TrainingArguments dataclass (for `refuse_hub_training_args`' `defaults`)."""
    import dataclasses

    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


# ---- release files ---------------------------------------------------------------------------------------------

def clean_release_config(config: dict) -> list[str]:
    """Drop remote-code hooks from a config dict in place; -> the keys removed."""
    removed = [k for k in REMOTE_CODE_KEYS if k in config]
    for key in removed:
        del config[key]
    return removed


def clean_tokenizer_config(config: dict, model_max_length: int | None) -> dict:
    """A tokenizer_config dict without call leftovers or remote-code hooks, with `model_max_length` set (the
    training length, so `pipeline(...)` truncates long texts to what the model saw)."""
    out = {k: v for k, v in config.items() if k not in TOKENIZER_CALL_KEYS}
    if model_max_length:
        out["model_max_length"] = int(model_max_length)
    return out


def local_path_patterns(extra_paths: Iterable[str | os.PathLike] = ()) -> list[tuple[re.Pattern, str]]:
    """(bytes regex, what it is) of the local paths and names a release may not hold."""
    patterns: list[tuple[re.Pattern, str]] = []
    literal: list[str] = []
    home = os.path.expanduser("~")
    if home and home not in ("/", "~") and len(home) > 1:
        literal.append(home)
    for p in extra_paths:
        for variant in {os.path.abspath(p), os.path.realpath(p)}:
            if variant.count(os.sep) >= 2:  # never "/" or a top-level folder alone
                literal.append(variant)
    for path in sorted(set(literal), key=len, reverse=True):
        patterns.append((re.compile(re.escape(path.encode())), "a local path"))
    patterns += [
        (re.compile(rb"(?<![\w.])/tmp/"), "a local path (/tmp/)"),
        (re.compile(rb"(?<![\w.])/home/[A-Za-z0-9_.\-]+"), "a local path (/home/NAME)"),
        (re.compile(rb"(?<![\w.])/root/"), "a local path (/root/)"),
        (re.compile(rb"(?<![\w.])/Users/[A-Za-z0-9_.\-]+/"), "a local path (/Users/NAME)"),
        (re.compile(rb"[A-Za-z]:(\\\\|\\|/)Users(\\\\|\\|/)", re.I), "a local path (C:\\Users)"),
        (TOKEN_SHAPED, "a Hub-token-shaped string (hf_...)"),
    ]
    try:
        user = getpass.getuser()
    except Exception:  # no user name known (some containers): nothing to look for
        user = ""
    if user and len(user) >= 2:
        name = re.escape(user.encode())
        # the user name where it identifies a person: a path component or before an @
        patterns.append((re.compile(rb"(?:[/\\]" + name + rb"(?=[/\\\"']))|(?:(?<![\w.])" + name + rb"@)"),
                         "the user name"))
    return patterns


def find_leaks(root: str | os.PathLike, files: Iterable[str], *, secrets: Iterable[str] = (),
               contents: dict[str, bytes] | None = None, limit: int = 20) -> list[tuple[str, int, str]]:
    """(file, byte offset, what) of every local path, user name, token-shaped string or given secret in `files`
    (relative to `root`; `contents` overrides a file's bytes, e.g. the card as it will be uploaded). At most
    `limit` findings, the first per pattern and file."""
    root = Path(root)
    patterns = local_path_patterns([root, root.parent])
    patterns += [(re.compile(re.escape(s.encode())), "the Hub token") for s in secrets if s]
    found: list[tuple[str, int, str]] = []
    for name in files:
        data = (contents or {}).get(name)
        if data is None:
            data = (root / name).read_bytes()
        hits: dict[str, int] = {}
        for pattern, what in patterns:
            m = pattern.search(data)
            if m and (what not in hits or m.start() < hits[what]):
                hits[what] = m.start()
        found += sorted(((name, offset, what) for what, offset in hits.items()), key=lambda x: x[1])
        if len(found) >= limit:
            break
    return found[:limit]


def leak_text(found: list[tuple[str, int, str]]) -> str:
    """The findings as one sentence part (no matched text: a token is never echoed)."""
    return "; ".join(f"{name} at byte {offset}: {what}" for name, offset, what in found)
