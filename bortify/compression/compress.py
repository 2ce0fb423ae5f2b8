"""`bortify compress DIR`: 8-bit weights, ONNX (fp32 + int8) and the offline bundle of a task model, each scored
on the task's test split and timed on the CPU (docs/methods/05-compression.md §5). The stage between finetune and card.

    <output_dir>/
      config.json, tokenizer files       copied from DIR (so the folder loads with load_quantized_model)
      model.q8.safetensors               the paper's linear 8-bit weights (bortify.compression.quantize)
      onnx/model.onnx, onnx/model_quantized.onnx   (bortify.compression.onnx_export; the card ships them)
      bundle/                            the offline bundle (bortify.compression.bundle)
      report.json                        CompressReport: bytes per part, scores, agreement, latency

The test split is the fine-tuning run's: its data options come from DIR's run record (stage_done.json, written
by `bortify run`) or, for a standalone `bortify finetune`, from its report.json, and the task is reloaded by
bortify.finetuning.tasks.prepare_task, which carves the same split from the same seed. Every check runs before
any work; the folder is assembled next to its destination and moved into place at the end.
"""

from __future__ import annotations

import inspect
import json
import shutil
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Callable

import numpy as np

from bortify.compression.arguments import CompressArguments
from bortify.reports import REPORT_FILE, CompressReport, read_report
from bortify.outputs import claim
from bortify.utils import BortifyError, make_shareable, torch_threads, write_json_atomic

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
RUN_RECORD = "stage_done.json"  # bortify.pipeline.DONE_FILE: the recipe section the finetune stage ran with
Forward = Callable[[dict], np.ndarray]  # encodings (numpy arrays) -> logits


class CompressError(BortifyError):
    """Input `bortify compress` cannot use; the message names the problem and the fix."""


# ---- checks (before any work) ----------------------------------------------------------------------------------

def check_model_dir(model_dir: Path) -> dict:
    """DIR must be a saved sequence classifier with its tokenizer; returns its config.json."""
    if not model_dir.is_dir():
        raise CompressError(f"{model_dir} does not exist; pass the output directory of `bortify finetune`.")
    config_path = model_dir / "config.json"
    if not config_path.is_file() or not (model_dir / "model.safetensors").is_file():
        raise CompressError(f"{model_dir} is not a saved checkpoint (needs config.json and model.safetensors); pass "
                            "the output directory of `bortify finetune`.")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CompressError(f"{config_path} is not valid JSON ({exc}); re-save the model.") from exc
    archs = config.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise CompressError(f"{model_dir} holds {archs or 'an unnamed architecture'}, not a task model "
                            "(*ForSequenceClassification): compress the output of `bortify finetune`.")
    if not any((model_dir / f).is_file() for f in TOKENIZER_FILES[:3]):
        raise CompressError(f"{model_dir} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}); save the "
                            "tokenizer next to the model.")
    return config


ENCODER_SHAPE = ("num_hidden_layers", "num_attention_heads", "hidden_size", "intermediate_size")


def check_model(model_dir: Path, args: CompressArguments) -> None:
    """Before any work: a BERT-family encoder (the 8-bit layout, the ONNX inputs and the offline bundle assume its
    shape: a decoder such as GPT-2 has no intermediate_size and fails minutes into the export), the sequence
    lengths within its position table, and finite weights (utils.check_finite_weights)."""
    from transformers import AutoConfig

    from bortify.utils import check_finite_weights, check_sequence_length, position_limit

    try:
        config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - an unreadable config is the user's to fix
        raise CompressError(f"Cannot read the config of {model_dir} ({exc}); re-save the model.") from None
    missing = [a for a in ENCODER_SHAPE if getattr(config, a, None) is None]
    if missing:
        raise CompressError(f"{model_dir} holds a {config.model_type} model, not a BERT-family encoder (its config "
                            f"lacks {missing}): bortify compresses encoders (bert, roberta, electra, MiniLM, ...) "
                            "fine-tuned by `bortify finetune`.")
    what = f"the model in {model_dir}"
    check_sequence_length(args.max_length, config, "--max_length", what)
    default = next(f.default for f in fields(CompressArguments) if f.name == "latency_seq_len")
    limit = position_limit(config)
    if args.latency_seconds and not (args.latency_seq_len == default and limit is not None and limit < default):
        check_sequence_length(args.latency_seq_len, config, "--latency_seq_len", what)  # the default is clipped
    check_finite_weights(model_dir / "model.safetensors", f"The model {model_dir / 'model.safetensors'}")


def check_packages(args: CompressArguments) -> None:
    import importlib.util

    if args.onnx:
        from bortify.compression.onnx_export import check_available

        check_available()
    if args.bundle and importlib.util.find_spec("mmh3") is None:
        raise CompressError("the offline bundle's hashed vocabulary needs mmh3: pip install bortify[compress] "
                            "(or pass --bundle false).")


# ---- the task's test split -----------------------------------------------------------------------------------

def recorded_data_options(model_dir: Path, report) -> dict:
    """The data options of the fine-tuning run: its recipe section (bortify run's record) if there is one, else
    what its report.json states (dataset, task, text columns, split seed and sizes)."""
    from bortify.finetuning.arguments import FinetuneDataArguments

    names = {f.name for f in fields(FinetuneDataArguments)}
    record = model_dir / RUN_RECORD
    if record.is_file():
        try:
            section = json.loads(record.read_text(encoding="utf-8")).get("recipe_section")
        except (OSError, json.JSONDecodeError, AttributeError):
            section = None
        if isinstance(section, dict):
            return {k: v for k, v in section.items() if k in names}
    if report is None:
        raise CompressError(f"{model_dir} has no report.json: its test split is unknown. Compress the output of "
                            "`bortify finetune`, or pass --dataset.")
    splits = report.splits or {}
    if splits.get("files"):
        raise CompressError(f"{model_dir} was fine-tuned on local files and its report keeps only their names "
                            f"({splits['files']}); pass --dataset PATH to score the compressed model.")
    sizes = splits.get("max_samples") or {}
    options = {"dataset": report.dataset, "task": report.task if report.dataset else None,
               "text_columns": report.text_columns or None, "split_seed": splits.get("seed"),
               "max_train_samples": sizes.get("train"), "max_dev_samples": sizes.get("dev"),
               "max_test_samples": sizes.get("test")}
    return {k: v for k, v in options.items() if v is not None}


def load_test_split(model_dir: Path, args: CompressArguments):
    """(TaskData, FinetuneReport) of the fine-tuning run; the data is loaded and split by
    bortify.finetuning.tasks.prepare_task with the recorded options."""
    from bortify.finetuning.arguments import FinetuneDataArguments
    from bortify.finetuning.tasks import load_task

    report = read_report(model_dir, "finetune")
    options = recorded_data_options(model_dir, report) if not args.dataset else {"dataset": args.dataset}
    data = FinetuneDataArguments(**options)
    task = load_task(data)
    return task, report


def check_labels(task, config: dict, model_dir: Path) -> None:
    names = [str(config.get("id2label", {}).get(str(i))) for i in range(len(task.label_names))]
    if not task.regression and names != [str(n) for n in task.label_names]:
        raise CompressError(f"{model_dir}'s labels {names} are not the task's {task.label_names}: the recorded "
                            "task does not belong to this model; pass --dataset.")


# ---- scoring and timing ------------------------------------------------------------------------------------------

def encodings(tokenizer, columns: list[list[str]], max_length: int, batch_size: int):
    """Padded numpy batches of the texts (one column, or two for pairs)."""
    for start in range(0, len(columns[0]), batch_size):
        texts = [c[start:start + batch_size] for c in columns]
        yield dict(tokenizer(*texts, truncation=True, max_length=max_length, padding=True, return_tensors="np"))


def torch_forward(model) -> Forward:
    import torch

    names = set(inspect.signature(model.forward).parameters)

    def forward(enc: dict) -> np.ndarray:
        with torch.no_grad():
            feed = {k: torch.from_numpy(np.asarray(v, dtype=np.int64)) for k, v in enc.items() if k in names}
            return model(**feed).logits.float().numpy()

    return forward


def all_logits(forward: Forward, batches: list[dict]) -> np.ndarray:
    return np.concatenate([forward(b) for b in batches])


def score_logits(logits: np.ndarray, labels: np.ndarray, task, reference: np.ndarray | None) -> dict:
    """The task's metrics, and agreement of the predictions with the fp32 model's (`reference` logits)."""
    from bortify.finetuning.trainer import score, to_predictions

    preds = to_predictions(logits, task.regression)
    out = {"scores": score(preds, labels, task.metrics, max(2, len(task.label_names)))}
    if reference is not None:
        ref = to_predictions(reference, task.regression)
        out["agreement"] = float(np.mean(preds == ref)) if not task.regression else None
        out["max_logit_diff"] = float(np.abs(logits - reference).max()) if logits.size else 0.0
    return out


def latency_batch(vocab_size: int, batch_size: int, seq_len: int, with_types: bool) -> dict:
    rng = np.random.default_rng(0)
    ids = rng.integers(min(1000, vocab_size - 1), vocab_size, size=(batch_size, seq_len), dtype=np.int64)
    enc = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if with_types:
        enc["token_type_ids"] = np.zeros_like(ids)
    return enc


# ---- the stage -----------------------------------------------------------------------------------------------

def compress(args: CompressArguments) -> CompressReport:
    """Quantise, export and bundle the task model in args.model_dir; score and time each form; write the folder."""
    model_dir = Path(args.model_dir)
    config = check_model_dir(model_dir)
    check_model(model_dir, args)
    # built beside --output_dir and swapped in at the end; a previous compress output is deleted only then, and
    # nothing else is ever replaced (bortify.outputs)
    with claim("compress", args.output_dir, overwrite=args.overwrite, inputs={"model": str(model_dir)}) as output:
        check_packages(args)
        with torch_threads(args.torch_threads):
            task, ft_report = load_test_split(model_dir, args)
            check_labels(task, config, model_dir)
            tmp = output.work_dir()
            report = _compress_into(tmp, model_dir, task, ft_report, args)
            report.output_dir = str(args.output_dir)
            write_json_atomic(tmp / REPORT_FILE, report.to_dict())
            make_shareable(tmp)
    return report


def _compress_into(tmp: Path, model_dir: Path, task, ft_report, args: CompressArguments) -> CompressReport:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bortify.compression import quantize as q

    started = time.perf_counter()
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), local_files_only=True,
                                                               use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    for name in ["config.json", *TOKENIZER_FILES]:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, tmp / name)
    quant = q.QuantConfig(per_channel=args.per_channel, drop_zeros=args.drop_zeros, zero_threshold=args.zero_threshold)
    weights = q.quantize_model(model, quant)
    q.save_quantized(weights, tmp / q.Q8_FILE)
    q8_model = q.load_quantized_model(tmp)  # what a user gets back from the file

    max_length = args.max_length or (ft_report.max_length if ft_report else None) or 128
    test = task.test if args.max_eval_samples is None else task.test.select(range(min(args.max_eval_samples, len(task.test))))
    labels = np.asarray(test["label"])
    columns = [list(test[c]) for c in task.text_columns]
    batches = list(encodings(tokenizer, columns, max_length, args.eval_batch_size))
    fp32_logits = all_logits(torch_forward(model), batches)
    forms = {"fp32": score_logits(fp32_logits, labels, task, None),
             "q8": score_logits(all_logits(torch_forward(q8_model), batches), labels, task, fp32_logits)}
    sizes = _sizes(model, weights, model_dir, tmp)
    timings: dict[str, Callable] = {"torch_fp32": torch_forward(model)}
    if args.onnx:
        forms.update(_onnx_forms(model, tmp, batches, labels, task, fp32_logits, args, timings))
        sizes.update({k: (tmp / "onnx" / f).stat().st_size for k, f in (("onnx_fp32", "model.onnx"),
                                                                          ("onnx_int8", "model_quantized.onnx"))})
    if args.bundle:
        forms["bundle"], sizes["bundle"] = _bundle_form(model, model_dir, tmp, task, columns, labels, fp32_logits, quant,
                                                        max_length, args)
    latency = _latency(timings, model.config, args)
    return CompressReport(
        model_dir=str(model_dir), dataset=args.dataset or (ft_report and ft_report.dataset) or task.name, test_rows=len(test),
        metric=task.metrics[0], quantization={**asdict(quant), "levels": q.LEVELS, "scheme": "linear, [min, max] "
                                              "with 0 on the grid"},
        sizes=sizes, zero_fraction=weights.zero_fraction(), code_entropy_bits=q.code_entropy_bits(weights),
        max_weight_error=_max_weight_error(model, q8_model), forms=forms, latency=latency,
        seconds=round(time.perf_counter() - started, 1))


def _sizes(model, weights, model_dir: Path, tmp: Path) -> dict:
    from bortify.compression import quantize as q

    tok_bytes = sum((model_dir / f).stat().st_size for f in TOKENIZER_FILES if (model_dir / f).is_file())
    fp32 = q.bytes_by_part(q.float_bytes_by_name(model.state_dict()))
    q8 = q.bytes_by_part(weights.bytes_by_name())
    coded = q.entropy_coded_sizes(tmp / q.Q8_FILE)
    return {"fp32_file": (model_dir / "model.safetensors").stat().st_size, "fp32_parts": {**fp32, "tokenizer": tok_bytes},
            "q8_file": (tmp / q.Q8_FILE).stat().st_size, "q8_parts": q8, "q8_zlib": coded["zlib"],
            "q8_lzma": coded["lzma"]}


def _max_weight_error(model, q8_model) -> float:
    a, b = model.state_dict(), q8_model.state_dict()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point())


def _onnx_forms(model, tmp: Path, batches, labels, task, fp32_logits, args, timings: dict) -> dict:
    from bortify.compression import onnx_export as ox

    import torch

    paths = ox.export_release_onnx(model, tmp, weight_type=args.onnx_weight_type)
    forms = {}
    for key, path in (("onnx_fp32", paths["fp32"]), ("onnx_int8", paths["int8"])):
        forward = ox.session_forward(ox.session(path, threads=torch.get_num_threads()))
        forms[key] = score_logits(all_logits(forward, batches), labels, task, fp32_logits)
        timings[key] = ox.session_forward(ox.session(path, threads=args.latency_threads))
    return forms


def _bundle_form(model, model_dir: Path, tmp: Path, task, columns, labels, fp32_logits, quant, max_length, args):
    from bortify.compression.bundle import OfflineBundle, write_bundle

    files = write_bundle(model, model_dir, tmp / "bundle", quant=quant, coding=args.bundle_coding,
                         max_length=max_length, text_columns=task.text_columns)
    bundle = OfflineBundle.load(tmp / "bundle")
    logits = bundle.logits(columns[0], columns[1] if len(columns) > 1 else None, batch_size=args.eval_batch_size)
    sizes = {"files": files, "total": sum(files.values()),
             "weights": sum(n for f, n in files.items() if f.startswith("model.q8")),
             "vocab": sum(n for f, n in files.items() if f.startswith("tokenizer/"))}
    return score_logits(logits, labels, task, fp32_logits), sizes


def _latency(timings: dict[str, Forward], config, args: CompressArguments) -> dict | None:
    """Median seconds per batch of each form, timed in alternation by bortify's one timer (bortify.timing)."""
    if not args.latency_seconds:
        return None
    from bortify.timing import cpu_name, time_calls

    from bortify.utils import position_limit

    seq_len = min(args.latency_seq_len, position_limit(config) or args.latency_seq_len)
    enc = latency_batch(config.vocab_size, args.latency_batch_size, seq_len, bool(getattr(config, "type_vocab_size", 0)))
    rounds = 3
    timed = time_calls({k: (lambda f=f: f(enc)) for k, f in timings.items()}, threads=args.latency_threads,
                       rounds=rounds, min_run_time=args.latency_seconds / rounds)
    return {"batch_size": args.latency_batch_size, "seq_len": seq_len, "threads": args.latency_threads,
            "seconds": {k: t.median_s for k, t in timed.items()},
            "timer": "bortify.timing.time_calls (torch.utils.benchmark blocked_autorange, in alternation, median)",
            "cpu": cpu_name()}
