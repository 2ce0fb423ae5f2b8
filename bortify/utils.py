"""Small shared helpers: atomic writes, the options every stage shares (output folders: bortify.outputs)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import field
from pathlib import Path
from typing import Any, Iterator


class OutputExistsError(FileExistsError):
    pass


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_shareable(root: str | os.PathLike) -> None:
    """Give a folder assembled in a temp dir (mkdtemp: 0700, mkstemp files: 0600) the modes of ordinary files."""
    mask = _umask()
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, 0o777 & ~mask)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o666 & ~mask)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, nulls: bool = False) -> None:
    """`obj` as strict JSON (json_text: no bare NaN/Infinity), written atomically."""
    write_bytes_atomic(path, (json_text(obj, what=str(path), nulls=nulls, indent=2) + "\n").encode())


# ---- strict JSON and finite numbers: a broken model never looks like a result ------------------------------

class NonFiniteError(ValueError):
    """A number that must be finite is NaN or infinite: a diverged training run, a broken checkpoint, a metric
    of one. A user error (USER_ERRORS): printed as one line, exit 2."""


def _is_real_float(value: Any) -> bool:
    import numbers

    return isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)


def non_finite_paths(obj: Any, trail: str = "") -> list[str]:
    """Where `obj` (JSON-like: dicts, lists, numbers) holds NaN or ±inf, as key paths ('test.accuracy', 'rounds[0]')."""
    import math

    if _is_real_float(obj):
        return [] if math.isfinite(float(obj)) else [trail or "(the value)"]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in non_finite_paths(v, f"{trail}.{k}" if trail else str(k))]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in non_finite_paths(v, f"{trail}[{i}]")]
    return []


def finite_or_none(obj: Any) -> Any:
    """A copy of `obj` (JSON-like) with NaN/±inf replaced by None: only where null means "not measurable"."""
    import math

    if _is_real_float(obj):
        return obj if math.isfinite(float(obj)) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def json_text(obj: Any, *, what: str = "JSON", nulls: bool = False, **kwargs) -> str:
    """`json.dumps` as every file bortify writes uses it: strict JSON (RFC 8259 has no NaN or Infinity; Python's
    default writes bare `NaN`, which JSON.parse, jq and the Hub's viewers reject). A non-finite number raises
    NonFiniteError naming where it is, unless `nulls` (the caller's null means "not measurable"): then it becomes
    null. Other keyword arguments go to json.dumps (default=str unless given)."""
    paths = non_finite_paths(obj)
    if paths and nulls:
        obj, paths = finite_or_none(obj), []
    if paths:
        raise NonFiniteError(f"{what}: refusing to write non-finite number(s) (NaN/inf) at {paths[:5]}"
                             f"{f' and {len(paths) - 5} more' if len(paths) > 5 else ''}. They come from a diverged "
                             "training run or a broken checkpoint; re-run the stage that produced them (e.g. with a "
                             "smaller learning rate).")
    kwargs.setdefault("default", str)
    return json.dumps(obj, allow_nan=False, **kwargs)


# ---- options every stage shares: same name, type, default, meaning and help -------------------------------

OVERWRITE_HELP = ("Replace a finished output in --output_dir and start an unfinished one again (default: a finished "
                  "output is refused and an unfinished one resumes where the stage can). Never replaces an input "
                  "or files bortify did not write.")
TORCH_THREADS_HELP = ("CPU threads for torch during this stage (torch.set_num_threads), restored when it returns; "
                      "default (unset): torch's choice. 1-2 is much faster on a CPU shared with other jobs.")


def help_field(text: str, **kw):
    """A dataclass field documented for HfArgumentParser's --help: `help_field("What it is.", default=3)`."""
    return field(metadata={"help": text}, **kw)


# The files that make a saved tokenizer loadable (any one of them); the card and push stages check for them.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


def overwrite_field():
    """The `overwrite: bool = False` field of a stage's arguments dataclass."""
    return field(default=False, metadata={"help": OVERWRITE_HELP})


def torch_threads_field():
    """The `torch_threads: int | None = None` field of a stage's arguments dataclass (check with check_torch_threads)."""
    return field(default=None, metadata={"help": TORCH_THREADS_HELP})


def check_torch_threads(value: int | None) -> None:
    """For __post_init__: None (torch's default) or a positive number of threads."""
    if value is not None and value < 1:
        raise ValueError(f"torch_threads must be >= 1, got {value} (leave it unset for torch's default).")


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch.set_num_threads(threads) for the block (None: leave torch's setting); the previous value is restored."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class BortifyError(ValueError):
    """Base of errors that are the user's to fix (bad input, a missing file, a refused overwrite).

    `bortify` prints these as one `bortify <command>: error: ...` line (exit 2), never as a traceback.
    Stage modules may subclass it; their older error classes are listed in `USER_ERRORS` below.
    """


class NonFiniteWeightsError(BortifyError):
    """A checkpoint or a just-trained model holds NaN/inf weights (check_finite_weights)."""


class DivergedError(BortifyError):
    """A training run's loss or weights became NaN/inf (bortify.trainer.FiniteGuard)."""


class SequenceLengthError(BortifyError):
    """A sequence length above a model's position table (check_sequence_length)."""


# (module, class name) of every stage's user-error class. `user_error_types` looks them up lazily in
# sys.modules: an error can only have been raised by a module that is loaded, so nothing is imported here.
USER_ERRORS: tuple[tuple[str, str], ...] = (
    ("bortify.utils", "BortifyError"), ("bortify.utils", "OutputExistsError"), ("bortify.utils", "NonFiniteError"),
    ("bortify.recipes", "RecipeError"), ("bortify.data", "DataError"), ("bortify.resources", "ResourceError"),
    ("bortify.slicing", "SlicingError"), ("bortify.extraction.space", "SpaceError"),
    ("bortify.extraction.estimators", "EstimatorError"), ("bortify.pretraining.pretrain", "PretrainError"),
    ("bortify.finetuning.labelers", "LabelerError"), ("bortify.finetuning.trainer", "ModelLoadError"),
    ("bortify.hub.card", "CardError"), ("bortify.hub.push", "PushError"),
)


def user_error_types() -> tuple[type[BaseException], ...]:
    """The user-error classes of every loaded bortify module (for `except user_error_types() as exc`)."""
    import sys

    found: list[type[BaseException]] = []
    for module_name, class_name in USER_ERRORS:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


# ---- secrets: Hub tokens never reach a file bortify writes ------------------------------------------------

# Hugging Face user access tokens ("hf_" + 34 letters/digits) and organisation API tokens ("api_org_...").
TOKEN_PATTERN = re.compile(r"\b(?:hf_[A-Za-z0-9]{30,}|api_org_[A-Za-z0-9]{30,})\b")
# Keys whose value is a secret, wherever they appear in a recipe or a report.
SECRET_KEYS = frozenset({"token", "hub_token", "hf_token", "use_auth_token", "auth_token", "api_token", "access_token"})
REDACTED = "***"


def known_tokens() -> list[str]:
    """This machine's Hub tokens (HF_TOKEN / HUGGING_FACE_HUB_TOKEN, else the saved login), to redact exactly."""
    tokens = [os.environ.get(k) for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")]
    try:
        from huggingface_hub import get_token

        tokens.append(get_token())
    except Exception:  # no huggingface_hub, unreadable token file: nothing more to redact
        pass
    return sorted({t for t in tokens if t and len(t) >= 8}, key=len, reverse=True)


def redact_secrets(obj: Any, tokens: list[str] | None = None) -> Any:
    """A copy of `obj` (JSON-like) with token-like strings and the values of secret keys replaced by ***."""
    tokens = known_tokens() if tokens is None else tokens

    def clean(value: Any, key: str | None = None) -> Any:
        if isinstance(value, str):
            if key is not None and key.lower() in SECRET_KEYS and value:
                return REDACTED
            for token in tokens:
                value = value.replace(token, REDACTED)
            return TOKEN_PATTERN.sub(REDACTED, value)
        if isinstance(value, dict):
            return {k: clean(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return clean(obj)


def is_hub_repo_id(spec: str) -> bool:
    """Whether `spec` is a valid Hugging Face Hub repo id (`name` or `owner/name`), by huggingface_hub's own rule
    (`validate_repo_id`). A spec that is not one and does not exist on disk can only be a missing local path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(str(spec))
    except HFValidationError:
        return False
    return True


def is_same_or_nested(a: str | os.PathLike, b: str | os.PathLike) -> str | None:
    """How two paths overlap once resolved: 'is' (same directory), 'contains' (b is inside a), 'is inside'
    (a is inside b), or None when neither holds."""
    pa, pb = Path(a).resolve(), Path(b).resolve()
    if pa == pb:
        return "is"
    if pb.is_relative_to(pa):
        return "contains"
    if pa.is_relative_to(pb):
        return "is inside"
    return None


# ---- model checks shared by every stage that loads or trains a model --------------------------------------

def _named_tensors(weights: Any):
    """(name, tensor) pairs of a torch module (parameters and buffers), a {name: tensor} mapping, or a
    .safetensors file / a folder of them (read tensor by tensor)."""
    if hasattr(weights, "named_parameters"):
        yield from weights.named_parameters()
        yield from weights.named_buffers()
        return
    if isinstance(weights, dict):
        yield from weights.items()
        return
    from safetensors import safe_open

    path = Path(weights)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                yield f"{file.name}:{key}", f.get_tensor(key)


def non_finite_tensors(weights: Any) -> tuple[list[str], int]:
    """(names of the floating-point tensors holding NaN or ±inf, number of tensors looked at)."""
    import torch

    bad, total = [], 0
    with torch.no_grad():
        for name, tensor in _named_tensors(weights):
            total += 1
            if torch.is_tensor(tensor) and tensor.is_floating_point() and tensor.numel() \
                    and not bool(torch.isfinite(tensor).all()):
                bad.append(name)
    return bad, total


def check_finite_weights(weights: Any, what: str) -> None:
    """Refuse a model whose weights hold NaN or ±inf, before it is used: such a checkpoint is the output of a
    diverged training run; it predicts one class everywhere (argmax over NaN logits), so every score computed
    with it would look like a result (a 2-class test set scores 0.5). `weights`: a torch module, a {name: tensor}
    mapping, or a .safetensors file / folder; `what` names it in the message (the flag and the path)."""
    bad, total = non_finite_tensors(weights)
    if bad:
        raise NonFiniteWeightsError(
            f"{what} has non-finite weights (NaN or inf) in {len(bad)} of {total} tensors, e.g. {bad[:3]}: it is the "
            "output of a training run that diverged and cannot be used. Re-train it (e.g. with a smaller learning "
            "rate) and give that checkpoint.")


# Models whose position ids start after the padding index (fairseq's convention): the usable positions are
# max_position_embeddings - (pad_token_id + 1) (transformers' RobertaEmbeddings.create_position_ids_from_input_ids).
PADDING_OFFSET_MODELS = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer",
                                   "data2vec-text", "roberta-prelayernorm", "xmod", "luke", "mpnet", "ibert",
                                   "markuplm", "esm", "lilt", "bridgetower"})


def position_limit(config: Any) -> int | None:
    """The longest input (in tokens, special tokens included) a model's position table holds: its
    max_position_embeddings, less pad_token_id + 1 for RoBERTa-style models; None when the config has no table."""
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(limit, int):
        return None
    if getattr(config, "model_type", None) in PADDING_OFFSET_MODELS:
        limit -= (getattr(config, "pad_token_id", None) or 0) + 1
    return limit


def check_sequence_length(length: int | None, config: Any, flag: str, what: str) -> None:
    """Refuse a sequence length (`flag`, e.g. '--max_length') above the position limit of the model `what`,
    before any work: a longer input indexes past the position table (an IndexError in the embeddings, or a
    silently shorter run)."""
    limit = position_limit(config)
    if length is not None and limit is not None and length > limit:
        table = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        offset = f" less the padding offset {table - limit} = {limit} tokens" if table != limit else " tokens"
        raise SequenceLengthError(f"{flag} {length} exceeds what {what} can read: its position table has "
                                  f"max_position_embeddings {table}{offset}. Give {flag} {limit} or less.")


def fit_sequence_length(length: int, default: int, models: list[tuple[Any, str]], flag: str) -> int:
    """The sequence length a run uses: `length` when every model ((config, what it is) pairs) can read it; the
    stage's `default` (e.g. 128) shortened to the shortest position table (a small model with 64 positions runs as
    it did, and the report records the length used); any other length longer than a table is refused
    (check_sequence_length)."""
    limits = [limit for limit in (position_limit(config) for config, _ in models) if limit is not None]
    if length == default and limits and min(limits) < length:
        return min(limits)
    for config, what in models:
        check_sequence_length(length, config, flag, what)
    return length
