"""bortify/utils.py: atomic writes, the shared stage options, user errors, secrets,
path overlap and the Hub repo-id rule."""

import json
import os
import stat
import sys
from dataclasses import dataclass, fields

import pytest
import torch

from bortify import utils
from bortify.utils import (
    REDACTED,
    TOKENIZER_FILES,
    OutputExistsError,
    check_torch_threads,
    help_field,
    is_hub_repo_id,
    is_same_or_nested,
    make_shareable,
    overwrite_field,
    redact_secrets,
    torch_threads,
    torch_threads_field,
    user_error_types,
    write_bytes_atomic,
    write_json_atomic,
)


# --- atomic writes ---------------------------------------------------------------------------------------------

def test_atomic_write_replaces_whole_files_with_ordinary_modes(tmp_path):
    path = tmp_path / "deep" / "report.json"
    write_json_atomic(path, {"a": 1, "path": tmp_path})  # parents made; non-JSON values as str
    assert json.loads(path.read_text()) == {"a": 1, "path": str(tmp_path)}
    write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temp file left


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "keep.txt"
    path.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(utils.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_make_shareable_gives_ordinary_modes(tmp_path):
    (tmp_path / "d").mkdir(mode=0o700)
    f = tmp_path / "d" / "f"
    f.write_text("x")
    f.chmod(0o600)
    make_shareable(tmp_path / "d")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~mask


@pytest.mark.parametrize("a, b, relation", [("x", "x", "is"), ("x", "x/y", "contains"), ("x/y", "x", "is inside"),
                                            ("x", "z", None), ("x/y", "x/yz", None)])
def test_is_same_or_nested(tmp_path, a, b, relation):
    assert is_same_or_nested(tmp_path / a, tmp_path / b) == relation


# --- the options every stage shares ----------------------------------------------------------------------------

def test_shared_fields_have_one_name_default_and_help():
    @dataclass
    class Args:
        n: int = help_field("How many.", default=3)
        overwrite: bool = overwrite_field()
        torch_threads: int | None = torch_threads_field()

    by_name = {f.name: f for f in fields(Args)}
    assert Args() == Args(3, False, None)
    assert by_name["n"].metadata["help"] == "How many."
    assert "Replace a finished output" in by_name["overwrite"].metadata["help"]
    assert "restored" in by_name["torch_threads"].metadata["help"]


def test_torch_threads_are_set_for_the_block_and_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before  # None: torch's own setting
    check_torch_threads(None)
    check_torch_threads(2)
    with pytest.raises(ValueError, match="torch_threads must be >= 1"):
        check_torch_threads(0)


def test_tokenizer_files_name_what_makes_a_saved_tokenizer(tmp_path):
    from bortify.resources import resolve_model

    saved = {p.name for p in __import__("pathlib").Path(resolve_model("embedded:splade-tiny")).iterdir()}
    assert set(TOKENIZER_FILES) & saved  # the packaged models carry at least one of them
    assert "config.json" not in TOKENIZER_FILES


# --- user errors -----------------------------------------------------------------------------------------------

def test_user_error_types_are_the_loaded_modules_error_classes():
    found = user_error_types()
    assert utils.BortifyError in found and OutputExistsError in found
    for module_name, class_name in utils.USER_ERRORS:  # every listed class is a real one where its module is loaded
        module = sys.modules.get(module_name)
        if module is not None:
            assert getattr(module, class_name) in found, (module_name, class_name)


# --- secrets ---------------------------------------------------------------------------------------------------

def test_redact_secrets_masks_tokens_and_secret_keys():
    token = "hf_" + "a1B2c3D4e5" * 4
    data = {"hub_token": "whatever", "note": f"pushed with {token}", "nested": [{"token": "x"}, "plain"],
            "steps": 3, "custom": "my-own-secret"}
    clean = redact_secrets(data, tokens=["my-own-secret"])
    assert clean == {"hub_token": REDACTED, "note": f"pushed with {REDACTED}", "nested": [{"token": REDACTED}, "plain"],
                     "steps": 3, "custom": REDACTED}
    assert data["note"].endswith(token)  # a copy: the input is untouched


# --- Hub repo ids ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, valid", [("bert-base-uncased", True), ("google/bert_uncased_L-2_H-128", True),
                                         ("reviews.csv", True), ("./model", False), ("/abs/model", False),
                                         ("~/model", False), ("a/b/c", False), ("../up", False),
                                         ("embedded:splade-tiny", False), ("", False)])
def test_is_hub_repo_id_follows_huggingface_hub(spec, valid):
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    assert is_hub_repo_id(spec) is valid
    try:
        validate_repo_id(spec)
        library = True
    except HFValidationError:
        library = False
    assert library is valid  # the same rule as the library's, not a second guess
