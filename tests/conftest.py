"""Shared fixtures. No test reaches the Hugging Face Hub: the real network here is PyPI only.

Hub tests (tests/test_hub_*.py, server in tests/hub_server.py) start their own loopback server and run the real clients in subprocesses with
HF_ENDPOINT set, so the offline flags below do not apply to them.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def minilm_path():
    from bortify.resources import resolve_model

    return resolve_model("embedded:all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def splade_path():
    from bortify.resources import resolve_model

    return resolve_model("embedded:splade-tiny")


@pytest.fixture(scope="session")
def rotten_tomatoes():
    from bortify.resources import load_embedded_dataset

    return load_embedded_dataset("embedded:rotten-tomatoes")


@pytest.fixture(scope="session")
def corpus():
    from bortify.resources import load_embedded_dataset

    return load_embedded_dataset("embedded:corpus")


@pytest.fixture
def tiny_bert_config():
    """A tiny random BERT config sharing the packaged models' vocabulary (fast tests)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models on a shared 2-core machine: one torch thread avoids oversubscription (~10x faster here).

    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- tiny models of tests/helpers.py, built once per module that asks for them -----------------------------------

@pytest.fixture(scope="module")
def finetune_models(tmp_path_factory):
    """helpers.FINETUNE_MODELS (student, labeler, gpt2, nopad) for this module: `copy_model` reads it."""
    from helpers import FINETUNE_MODELS, save_finetune_models

    FINETUNE_MODELS.update(save_finetune_models(tmp_path_factory.mktemp("models")))
    yield FINETUNE_MODELS
    FINETUNE_MODELS.clear()


@pytest.fixture(scope="module")
def compare_models(tmp_path_factory):
    """helpers.COMPARE_MODELS (old, new, other_labels, old_swapped, mlm) for this module: `copy_compare_models`."""
    from helpers import COMPARE_MODELS, save_compare_models

    COMPARE_MODELS.update(save_compare_models(tmp_path_factory.mktemp("models")))
    yield COMPARE_MODELS
    COMPARE_MODELS.clear()


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    """A tiny masked-LM teacher directory (model.safetensors + tokenizer), built once per module."""
    from helpers import save_tiny_teacher

    return save_tiny_teacher(tmp_path_factory.mktemp("teacher") / "teacher")
