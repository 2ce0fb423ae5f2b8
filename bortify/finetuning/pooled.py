"""A sequence classifier that pools token states the way its encoder was trained to (docs/methods/07-task-distillation.md §7.2).

`AutoModelForSequenceClassification` classifies from [CLS] through a pooler. A sentence-transformers encoder such
as all-MiniLM-L6-v2 was trained with MEAN pooling and ships no pooler, so the stock classifier reads a token the
encoder never learned to summarise with through a layer initialised at random. `PooledEncoderForSequenceClassification`
is the head the encoder was trained for: the attention-masked mean (or the [CLS] state) of the last hidden states,
optionally L2-normalised, then one linear layer. It is bortify's internal teacher (the released student stays a stock
`BertForSequenceClassification`).

The classes are registered with the transformers Auto classes when this module is imported (bortify's own code, not
`trust_remote_code`), so a saved teacher loads with `AutoModelForSequenceClassification.from_pretrained` inside bortify.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn
from transformers import (AutoConfig, AutoModel, AutoModelForSequenceClassification, PretrainedConfig,
                          PreTrainedModel)
from transformers.modeling_outputs import SequenceClassifierOutput

POOLINGS = ("mean", "cls")


class PooledClassifierConfig(PretrainedConfig):
    """The encoder's own config (as a dict, `encoder`), the pooling, L2 normalisation and the label set."""

    model_type = "bortify_pooled_classifier"

    def __init__(self, encoder: dict | None = None, pooling: str = "mean", normalize: bool = False,
                 classifier_dropout: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.encoder = dict(encoder or {})
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
        self.pooling, self.normalize, self.classifier_dropout = pooling, bool(normalize), classifier_dropout

    def encoder_config(self):
        encoder = dict(self.encoder)
        return AutoConfig.for_model(encoder.pop("model_type"), **encoder)

    def __getattr__(self, name):  # the BERT shape (D, A, H, I) and the position limit read through to the encoder
        encoder = self.__dict__.get("encoder") or {}
        if name in encoder:
            return encoder[name]
        raise AttributeError(name)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str, normalize: bool) -> torch.Tensor:
    """Sentence vectors from the last hidden states: the attention-masked mean, or the first ([CLS]) token;
    L2-normalised when the encoder was trained that way (sentence-transformers' Normalize module)."""
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        mask = (torch.ones(hidden.shape[:2], device=hidden.device) if attention_mask is None
                else attention_mask).unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return nn.functional.normalize(pooled, dim=-1) if normalize else pooled


def _bare_encoder(config):
    """The encoder without its pooler (BERT/RoBERTa take add_pooling_layer; other families have none)."""
    try:
        return AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(config)


class PooledEncoderForSequenceClassification(PreTrainedModel):
    config_class = PooledClassifierConfig
    base_model_prefix = "encoder"

    def __init__(self, config: PooledClassifierConfig, encoder=None):
        super().__init__(config)
        self.encoder = encoder if encoder is not None else _bare_encoder(config.encoder_config())
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(self.encoder.config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module):
        if module is getattr(self, "classifier", None):
            module.weight.data.normal_(0.0, 0.02)
            module.bias.data.zero_()

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def pooled(self, input_ids=None, attention_mask=None, token_type_ids=None, output_hidden_states=False):
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                           output_hidden_states=output_hidden_states, **kwargs)
        return pool(out.last_hidden_state, attention_mask, self.config.pooling, self.config.normalize), out

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None,
                output_hidden_states=None, **kwargs):
        pooled, out = self.pooled(input_ids, attention_mask, token_type_ids, bool(output_hidden_states))
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = nn.functional.mse_loss(logits.squeeze(-1), labels.float())
            else:
                loss = nn.functional.cross_entropy(logits, labels.long())
        return SequenceClassifierOutput(loss=loss, logits=logits,
                                        hidden_states=out.hidden_states if output_hidden_states else None)


AutoConfig.register(PooledClassifierConfig.model_type, PooledClassifierConfig, exist_ok=True)
AutoModelForSequenceClassification.register(PooledClassifierConfig, PooledEncoderForSequenceClassification,
                                            exist_ok=True)


def source_pooling(path: str | os.PathLike) -> tuple[str, bool, str]:
    """(pooling, normalize, why) the source encoder was trained with, read from its sentence-transformers files:
    `modules.json` names a Pooling module (its config's `pooling_mode_mean_tokens` / `pooling_mode_cls_token`) and
    maybe a Normalize module. A checkpoint without them was pretrained to classify from [CLS] (BERT's pooler)."""
    root = Path(path)
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        modules_file = _hub_file(str(path), "modules.json")
    if modules_file is None or not Path(modules_file).is_file():
        return "cls", False, "no sentence-transformers modules.json: [CLS], as the encoder was pretrained"
    try:
        modules = json.loads(Path(modules_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "cls", False, "modules.json unreadable: [CLS]"
    types = {m.get("type", "").rsplit(".", 1)[-1]: m for m in modules if isinstance(m, dict)}
    normalize = "Normalize" in types
    if "Pooling" not in types:
        return "cls", normalize, "modules.json names no Pooling module: [CLS]"
    sub = types["Pooling"].get("path", "1_Pooling")
    cfg_file = root / sub / "config.json" if (root / sub / "config.json").is_file() else _hub_file(
        str(path), f"{sub}/config.json")
    try:
        cfg = json.loads(Path(cfg_file).read_text(encoding="utf-8")) if cfg_file else {}
    except (OSError, ValueError):
        cfg = {}
    if cfg.get("pooling_mode_cls_token") and not cfg.get("pooling_mode_mean_tokens"):
        return "cls", normalize, "sentence-transformers Pooling module: [CLS] token"
    return "mean", normalize, "sentence-transformers Pooling module: mean of the token states"


def _hub_file(name: str, filename: str) -> str | None:
    """A file of a Hub repo (cached or downloaded), or None (no Hub, no such file, or a local path)."""
    if os.path.exists(name):
        return None
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(name, filename)
    except Exception:  # noqa: BLE001 - offline, private, or the repo has no such file: fall back to [CLS]
        return None


def pooled_classifier(path: str, label_names: list[str], regression: bool, *, pooling: str,
                      normalize: bool) -> PooledEncoderForSequenceClassification:
    """The pretrained encoder at `path` under a fresh linear head, pooled as given (weights as safetensors)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # an MLM head or a pooler in the checkpoint is not used: expected
    try:
        encoder = AutoModel.from_pretrained(path, use_safetensors=True, trust_remote_code=False)
    finally:
        hf_logging.set_verbosity(verbosity)
    if hasattr(encoder, "pooler"):
        encoder.pooler = None  # never read: the sentence vector is pooled from the token states
    kwargs = {"num_labels": 1, "problem_type": "regression"} if regression else {
        "num_labels": len(label_names), "problem_type": "single_label_classification",
        "id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
    config = PooledClassifierConfig(encoder=encoder.config.to_dict(), pooling=pooling, normalize=normalize,
                                    **kwargs)
    config.architectures = [PooledEncoderForSequenceClassification.__name__]
    return PooledEncoderForSequenceClassification(config, encoder=encoder)
