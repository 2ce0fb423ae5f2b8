"""The two private Trainer methods DistillationTrainer overrides, `_save` and `_load_from_checkpoint`, pinned against
the locked transformers (requirements/lock.txt). Why no public hook serves: bortify/pretraining/trainer.py's module
docstring. If a transformers upgrade changes their signatures or where the Trainer calls them, these fail before a
checkpoint is written or resumed in the wrong layout."""

import inspect
import re
from pathlib import Path

import datasets
import pytest
import safetensors.torch
import torch
from torch import nn
from transformers import AutoTokenizer, BertForMaskedLM, Trainer

from bortify.pretraining.arguments import DistillationArguments
from bortify.pretraining.data import make_collator
from bortify.pretraining.trainer import PROJECTIONS_NAME, DistillationStudent, DistillationTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOCK = Path(__file__).resolve().parents[1] / "requirements" / "lock.txt"


def _locked(package: str) -> str:
    found = re.search(rf"^{package}==(\S+)", LOCK.read_text(), re.M)
    assert found, f"{package} is not pinned in {LOCK}"
    return found.group(1)


def _parameters(fn) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


def test_the_overridden_private_methods_keep_their_signatures():
    import transformers

    where = f"transformers {transformers.__version__} (locked: {_locked('transformers')})"
    assert _parameters(Trainer._save) == [("self", inspect.Parameter.empty), ("output_dir", None),
                                          ("state_dict", None)], where
    assert _parameters(Trainer._load_from_checkpoint) == [("self", inspect.Parameter.empty),
                                                          ("resume_from_checkpoint", inspect.Parameter.empty),
                                                          ("model", None)], where
    assert _parameters(DistillationTrainer._save) == _parameters(Trainer._save)
    assert _parameters(DistillationTrainer._load_from_checkpoint) == _parameters(Trainer._load_from_checkpoint)


def test_the_trainer_calls_them_where_bortify_relies_on_it():
    """Checkpoints and the final save go through save_model -> _save (with the gathered state dict under FSDP and
    DeepSpeed); resuming goes through train -> _load_from_checkpoint (before accelerator.prepare), and FSDP's through
    _prepare_for_training."""
    save_model = inspect.getsource(Trainer.save_model)
    assert "self._save(output_dir)" in save_model and "self._save(output_dir, state_dict=state_dict)" in save_model
    assert "self.save_model(output_dir, _internal_call=True)" in inspect.getsource(Trainer._save_checkpoint)
    assert "self._load_from_checkpoint(resume_from_checkpoint)" in inspect.getsource(Trainer.train)
    assert ("self._load_from_checkpoint(resume_from_checkpoint, self.model_wrapped)"
            in inspect.getsource(Trainer._prepare_for_training))


def _blocks(tokenizer, n=8, length=16) -> datasets.Dataset:
    g = torch.Generator().manual_seed(11)
    rows = []
    for _ in range(n):
        body = torch.randint(1000, 29000, (length - 2,), generator=g).tolist()
        rows.append({"input_ids": [tokenizer.cls_token_id, *body, tokenizer.sep_token_id],
                     "attention_mask": [1] * length, "special_tokens_mask": [1] + [0] * (length - 2) + [1]})
    return datasets.Dataset.from_list(rows)


def _trainer(out: Path, config, tokenizer, seed: int, max_steps: int) -> DistillationTrainer:
    torch.manual_seed(seed)
    student = DistillationStudent(BertForMaskedLM(config), projections=nn.ModuleList([nn.Linear(32, 32)]),
                                  hidden_layers=[1])
    torch.manual_seed(100)
    teacher = BertForMaskedLM(config)
    args = DistillationArguments(output_dir=str(out), use_cpu=True, report_to="none", max_steps=max_steps,
                                 save_strategy="steps", save_steps=1, per_device_train_batch_size=4,
                                 disable_tqdm=True, seed=0)
    return DistillationTrainer(model=student, args=args, train_dataset=_blocks(tokenizer), processing_class=tokenizer,
                               data_collator=make_collator(tokenizer, 0.3, "static", seed=0), teacher=teacher,
                               kd_mode="representation", teacher_layers=[1])


def test_a_checkpoint_is_a_plain_student_plus_projections_and_resumes_through_the_override(tmp_path,
                                                                                        tiny_bert_config):
    from bortify.resources import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("embedded:splade-tiny"))  # the tokenizer only: fast
    trained = _trainer(tmp_path / "run", tiny_bert_config, tokenizer, seed=0, max_steps=2)
    trained.train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    # _save's layout: a BertForMaskedLM checkpoint (no wrapper prefix, no teacher) and the projections apart
    weights = safetensors.torch.load_file(str(checkpoint / "model.safetensors"))
    assert weights and not any(k.startswith(("student.", "teacher.", "projections.")) for k in weights)
    loaded = BertForMaskedLM.from_pretrained(checkpoint)
    final = trained.accelerator.unwrap_model(trained.model)
    assert all(torch.equal(v, final.student.state_dict()[k]) for k, v in loaded.state_dict().items())
    projections = safetensors.torch.load_file(str(checkpoint / PROJECTIONS_NAME))
    assert set(projections) == {"0.weight", "0.bias"}
    assert torch.equal(projections["0.weight"], final.projections[0].weight.detach())
    assert (checkpoint / "tokenizer.json").exists() and (checkpoint / "training_args.bin").exists()

    # resume: another initialisation, nothing left to train; train() loads the checkpoint through the override
    resumed = _trainer(tmp_path / "run", tiny_bert_config, tokenizer, seed=1, max_steps=2)
    calls = []
    original = resumed._load_from_checkpoint
    resumed._load_from_checkpoint = lambda *a, **k: calls.append(a) or original(*a, **k)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert calls and calls[0][0] == str(checkpoint)
    back = resumed.accelerator.unwrap_model(resumed.model)
    assert all(torch.equal(v, back.student.state_dict()[k]) for k, v in final.student.state_dict().items())
    assert torch.equal(back.projections[0].weight, final.projections[0].weight)
