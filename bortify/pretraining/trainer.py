"""`DistillationTrainer(Trainer)`: knowledge-distillation pretraining of a BERT student (docs/methods/02-pretraining.md §2).

What the Trainer trains (`self.model`) is `DistillationStudent`: the student `BertForMaskedLM` plus, in
representation mode, the learned projections the hidden-state loss needs. The teacher is NOT part of it:
it lives in `self.teacher`, frozen, in eval mode, placed on the device by accelerate, run under no_grad,
and never saved. `_save` writes the student as a plain BertForMaskedLM checkpoint (loads with
`AutoModelForMaskedLM.from_pretrained`, no custom code) and the projections apart
(`kd_projections.safetensors`, needed only to resume); `_load_from_checkpoint` reads both back.

Why these two private Trainer methods, when no public hook serves: every save (the checkpoints of `_save_checkpoint`
and the final `save_model`) goes through the public `save_model`, which under FSDP and DeepSpeed first gathers the
full state dict and hands it to `_save`; overriding `save_model` instead would mean copying that gathering. A
callback's `on_save` runs only after the Trainer has written the wrapper's own state dict (`student.` and
`projections.` keys, which `from_pretrained` cannot load). Resuming has no public hook: `train` calls
`_load_from_checkpoint` before `accelerator.prepare` (FSDP: in `_prepare_for_training`, after it), and
`on_train_begin` comes later, once the stock loader has already tried the plain checkpoint on the wrapper.
tests/test_pretraining_trainer_hooks.py pins the signatures and call sites this relies on against the locked
transformers (requirements/lock.txt).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass

import safetensors.torch
import torch
from torch import nn
from transformers import BertForMaskedLM, Trainer
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.utils import ModelOutput

from bortify.compatible_embeddings.losses import compatibility_loss
from bortify.pretraining.losses import (
    IGNORE_INDEX,
    attention_relation_kd_loss,
    hidden_mse_loss,
    logit_kd_loss,
    masked_cross_entropy,
    scale_to_global_tokens,
)

PROJECTIONS_NAME = "kd_projections.safetensors"
_QKV_NAMES = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"), ("q_lin", "k_lin", "v_lin"))


def qkv_linears(model: nn.Module, layer: int) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The query / key / value projections of transformer layer `layer` (0-based) of a BERT-like encoder."""
    base = getattr(model, "base_model", model)
    layers = None
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        obj = base
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.ModuleList):
            layers = obj
            break
    if layers is None:
        raise ValueError(f"Cannot find the transformer layers of {type(model).__name__} for attention-relation KD; "
                         "set w_attn 0 to train without it.")
    block = layers[layer]
    found = {name.rsplit(".", 1)[-1]: m for name, m in block.named_modules() if isinstance(m, nn.Linear)}
    for names in _QKV_NAMES:
        if all(n in found for n in names):
            return tuple(found[n] for n in names)  # type: ignore[return-value]
    raise ValueError(f"Cannot find query/key/value projections in layer {layer} of {type(model).__name__}; set "
                     "w_attn 0 to train without attention-relation KD.")


def masked_teacher_logits(teacher: nn.Module, input_ids, attention_mask, keep: torch.Tensor) -> torch.Tensor:
    """The teacher's MLM logits at the `keep` positions only, (N, V).

    For BERT/RoBERTa-style masked LMs (head in `.cls` or `.lm_head`) the head runs on the masked positions
    only, which skips most of the teacher's 30-50k-way output layer; other teachers run whole and are indexed.
    """
    head = getattr(teacher, "cls", None) or getattr(teacher, "lm_head", None)
    base = getattr(teacher, "base_model", None)
    if head is not None and base is not None and base is not teacher:
        hidden = base(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
        return head(hidden[keep])
    return teacher(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).logits[keep]


@dataclass
class StudentOutput(ModelOutput):
    """A ModelOutput (a registered pytree), so DDP and FSDP2 find the tensors inside for their backward hooks."""

    loss: torch.Tensor | None = None  # eval mode only: the masked-LM cross-entropy (what `Trainer.evaluate` reads)
    logits: torch.Tensor | None = None  # (N, V) at masked positions only
    labels: torch.Tensor | None = None  # (N,)
    hidden: tuple[torch.Tensor, ...] | None = None  # projected hidden states of the mapped layers (representation)
    qkv: tuple[torch.Tensor, ...] | None = None  # last layer's query/key/value (representation, w_attn > 0)
    compat: torch.Tensor | None = None  # projected sentence embeddings of the compat batch (--compatible_with)


class DistillationStudent(nn.Module):
    """The student BertForMaskedLM plus the KD projections, as one module for the Trainer / DDP / FSDP.

    Its forward computes the MLM head only at masked positions: the 30k-way output layer is most of a small
    student's cost, and only masked positions enter the loss (docs/methods/01-extraction.md §1: ~7× cheaper). Everything the
    loss needs from the student comes out of this one forward, so DDP sees every parameter used.
    """

    # The Trainer then counts the masked tokens of the whole optimiser step (all micro-batches, all ranks) and
    # passes it to compute_loss as num_items_in_batch, which makes the loss a true per-token mean of the step.
    accepts_loss_kwargs = True

    def __init__(self, student: BertForMaskedLM, projections: nn.ModuleList | None = None,
                 hidden_layers: list[int] | None = None, relation: bool = False, compat: nn.Module | None = None):
        super().__init__()
        self.student = student
        self.projections = projections if projections is not None and len(projections) else None
        self.hidden_layers = list(hidden_layers or [])
        self.relation = relation
        self.compat = compat  # bortify.pretraining.compat.CompatHead: Dense(pool(student)) into the old model's space

    @property
    def config(self):
        return self.student.config

    def forward(self, input_ids, attention_mask=None, labels=None, token_type_ids=None, compat_input_ids=None,
                compat_attention_mask=None, **_) -> StudentOutput:
        want_hidden = bool(self.hidden_layers) or self.relation
        out = self.student.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                output_hidden_states=want_hidden, return_dict=True)
        keep = labels != IGNORE_INDEX
        logits = self.student.cls(out.last_hidden_state[keep])
        hidden = None
        if self.hidden_layers:
            states = [out.hidden_states[i + 1] for i in self.hidden_layers]
            projections = self.projections if self.projections is not None else [None] * len(states)
            hidden = tuple(p(h) if p is not None else h for p, h in zip(projections, states))
        qkv = None
        if self.relation:  # recompute Q, K, V of the last layer from its input (no hooks needed)
            x = out.hidden_states[-2]
            qkv = tuple(lin(x) for lin in qkv_linears(self.student, self.student.config.num_hidden_layers - 1))
        gold = labels[keep]
        # In training DistillationTrainer.compute_loss builds the loss; in eval mode (Trainer.evaluate, the held-out
        # score) the output carries the student's own masked-LM loss.
        loss = None if self.training else masked_cross_entropy(logits, gold)
        compat = None
        if self.compat is not None and compat_input_ids is not None:  # clean single texts (docs/methods/04-updates.md §4)
            compat = self.compat(self.student.bert, compat_input_ids, compat_attention_mask)
        return StudentOutput(loss=loss, logits=logits, labels=gold, hidden=hidden, qkv=qkv, compat=compat)


class DistillationTrainer(Trainer):
    """Trainer whose loss is Bort's logit KD or TinyBERT/MiniLMv2 representation KD (docs/methods/02-pretraining.md §2).

    Args beyond Trainer's: `teacher` (a frozen model; never saved), `kd_mode` ('logit' | 'representation'),
    `teacher_layers` (the teacher layer, 0-based as `bortify.slicing.default_layer_map` gives it, that each
    student layer distils), `relation_heads` and `relation_teacher_layer` (0-based) for attention-relation KD. Loss weights come from `args`
    (`DistillationArguments`).
    """

    def __init__(self, *args, teacher: nn.Module, kd_mode: str, teacher_layers: list[int] | None = None,
                 relation_heads: int | None = None, relation_teacher_layer: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if kd_mode not in ("logit", "representation"):
            raise ValueError(f"kd_mode must be 'logit' or 'representation', got {kd_mode!r}.")
        teacher.eval().requires_grad_(False)
        # accelerate places it (device, and DeepSpeed/FSDP wrapping where enabled) without making it trainable.
        self.teacher = self.accelerator.prepare_model(teacher, evaluation_mode=True)
        self.kd_mode = kd_mode
        self.teacher_layers = list(teacher_layers or [])
        self.relation_heads = relation_heads
        self.relation_teacher_layer = relation_teacher_layer
        self._kd_metrics: dict[str, list[float]] = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        attention_mask = inputs.get("attention_mask")
        student: StudentOutput = model(input_ids=inputs["input_ids"], attention_mask=attention_mask,
                                       labels=inputs["labels"], token_type_ids=inputs.get("token_type_ids"),
                                       compat_input_ids=inputs.get("compat_input_ids"),
                                       compat_attention_mask=inputs.get("compat_attention_mask"))
        representation = self.kd_mode == "representation"
        parts: dict[str, torch.Tensor] = {}
        if not representation:
            # Bort (docs/methods/02-pretraining.md §2): w_mlm·CE + w_kd·T²·KL, masked positions only.
            keep = inputs["labels"] != IGNORE_INDEX
            with torch.no_grad():
                t_logits = masked_teacher_logits(self.accelerator.unwrap_model(self.teacher), inputs["input_ids"],
                                                 attention_mask, keep)
            kd = logit_kd_loss(student.logits, t_logits, student.labels, temperature=args.temperature,
                               w_mlm=args.mlm_weight("logit"), w_kd=args.w_kd, kd_reduction=args.kd_reduction)
            loss, parts["mlm"], parts["kd"] = kd.loss, kd.mlm, kd.kd
        else:
            # Representation KD (docs/methods/02-pretraining.md §2): student's own MLM + TinyBERT hidden MSE + MiniLMv2 relations.
            with torch.no_grad():
                t_out = self.teacher(input_ids=inputs["input_ids"], attention_mask=attention_mask,
                                     output_hidden_states=True, return_dict=True)
            mlm = masked_cross_entropy(student.logits, student.labels)
            loss = args.mlm_weight("representation") * mlm
            parts["mlm"] = mlm
            if student.hidden:
                # hidden_states[0] is the embeddings' output, so teacher layer j's output is hidden_states[j + 1]
                hid = hidden_mse_loss(student.hidden, [t_out.hidden_states[j + 1] for j in self.teacher_layers],
                                      attention_mask=attention_mask)
                loss = loss + args.w_hidden * hid
                parts["hidden_mse"] = hid
            if student.qkv:
                layer = self.relation_teacher_layer  # 0-based: its input is hidden_states[layer]
                with torch.no_grad():
                    x = t_out.hidden_states[layer]
                    t_qkv = tuple(lin(x) for lin in qkv_linears(self.accelerator.unwrap_model(self.teacher), layer))
                rel = attention_relation_kd_loss(student.qkv, t_qkv, self.relation_heads, attention_mask)
                loss = loss + args.w_attn * rel
                parts["attn_relation"] = rel
        if student.compat is not None:
            # Backward-compatible embeddings (BCT, docs/methods/04-updates.md §4): the projected sentence embedding onto the
            # old model's, precomputed once (inputs["compat_target"]).
            comp = compatibility_loss(student.compat, inputs["compat_target"], args.compat_loss)
            loss = loss + args.w_compat * comp
            parts["compat"] = comp
        if num_items_in_batch is not None and student.labels.numel():
            # Per-token mean over the global step instead of over this micro-batch (losses.scale_to_global_tokens).
            processes = self.accelerator.num_processes if args.average_tokens_across_devices else 1
            loss = scale_to_global_tokens(loss, student.labels.numel(), num_items_in_batch, processes)
        if model.training:
            for key, value in parts.items():
                self._kd_metrics[key].append(float(value.detach()))
        return (loss, student) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Add the loss parts averaged since the last log (this process's batches).
        if "loss" in logs and self._kd_metrics:
            for key, values in self._kd_metrics.items():
                logs[f"loss_{key}"] = round(sum(values) / len(values), 6)
            self._kd_metrics.clear()
        super().log(logs, start_time)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save the student as a standard BertForMaskedLM checkpoint, the projections apart, never the teacher."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        wrapper: DistillationStudent = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if state_dict is None:
            state_dict = wrapper.state_dict()
        student_sd = {k[len("student."):]: v for k, v in state_dict.items() if k.startswith("student.")}
        proj_sd = {k[len("projections."):]: v.contiguous() for k, v in state_dict.items() if k.startswith("projections.")}
        wrapper.student.save_pretrained(output_dir, state_dict=student_sd)
        if proj_sd:
            safetensors.torch.save_file(proj_sd, os.path.join(output_dir, PROJECTIONS_NAME), metadata={"format": "pt"})
        if wrapper.compat is not None:  # the sentence-transformers files (modules.json, 1_Pooling, 2_Dense, ...)
            compat_sd = {k[len("compat."):]: v for k, v in state_dict.items() if k.startswith("compat.")}
            wrapper.compat.save(output_dir, compat_sd)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        wrapper = self.accelerator.unwrap_model(model if model is not None else self.model)
        loaded = BertForMaskedLM.from_pretrained(resume_from_checkpoint, use_safetensors=True)
        from bortify.utils import check_finite_weights

        check_finite_weights(loaded, f"The checkpoint being resumed ({resume_from_checkpoint})")
        wrapper.student.load_state_dict(loaded.state_dict())
        proj_file = os.path.join(resume_from_checkpoint, PROJECTIONS_NAME)
        if wrapper.projections is not None:
            if not os.path.isfile(proj_file):
                raise ValueError(f"Checkpoint {resume_from_checkpoint} has no {PROJECTIONS_NAME} but this run uses "
                                 "KD projections: it was made by a different configuration.")
            wrapper.projections.load_state_dict(safetensors.torch.load_file(proj_file))
        if wrapper.compat is not None:
            wrapper.compat.load(resume_from_checkpoint)
