"""Hybrid-sharded (HSDP, the MiCS layout) KD pretraining with PyTorch's own FSDP2 `fully_shard`.

MiCS (docs/methods/06-mics.md §6) shards model states only inside a partition group and replicates across groups; in
PyTorch that is `fully_shard(module, mesh=2-D DeviceMesh(replicate, shard))`: parameters, gradients and
optimiser state are sharded over the `shard` dimension (reduce-scatter inside the group) and gradients are
all-reduced over the `replicate` dimension (the second hop). On GPUs, accelerate reaches the same thing with
`recipes/accelerate/fsdp2_hsdp.yaml`; accelerate 1.15 will not enable FSDP on CPU, so this module drives
`fully_shard` directly. It runs bortify's student (`DistillationStudent`) and KD loss (`logit_kd_loss`),
and for comparison the same steps under DDP, on identical global batches and masks.

What it is (our decision, docs/methods/06-mics.md §6): the product's documented CPU path for the MiCS layout, not test
scaffolding. It therefore owns no maths of its own: the student module, the masked-position teacher logits,
the loss (`losses.logit_kd_loss`) and the rescaling to the step's global token count
(`losses.scale_to_global_tokens`) are the ones `DistillationTrainer` uses; only the loop (which accelerate
cannot drive on CPU with FSDP) is here. Logit KD only; `bortify pretrain` (the Trainer) is the path for
everything else. tests/test_pretraining_distributed.py runs it with 4 real processes.

    torchrun --nproc_per_node 4 -m bortify.pretraining.distributed --student_config DIR \\
        --teacher embedded:splade-tiny --output_dir OUT --replicate 2 --shard 2 --strategies ddp,hsdp

Rank 0 writes OUT/distributed_report.json (the loss of every step per strategy) and OUT/hsdp/ (the student,
gathered to one plain BertForMaskedLM checkpoint).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertForMaskedLM

from bortify.data import resolve_model
from bortify.pretraining.data import load_pretraining_data, make_collator
from bortify.pretraining.losses import IGNORE_INDEX, logit_kd_loss, scale_to_global_tokens
from bortify.pretraining.pretrain import load_student_config
from bortify.pretraining.trainer import DistillationStudent, masked_teacher_logits
from bortify.utils import write_json_atomic


def build_student(config, seed: int) -> DistillationStudent:
    torch.manual_seed(seed)
    return DistillationStudent(BertForMaskedLM(config))


def apply_hsdp(model: DistillationStudent, replicate: int, shard: int):
    """Shard each transformer layer, then the rest (embeddings, tied MLM head), over a replicate × shard mesh."""
    mesh = init_device_mesh("cpu", (replicate, shard), mesh_dim_names=("replicate", "shard"))
    for layer in model.student.bert.encoder.layer:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, mesh


def kd_step_loss(model, teacher, batch, n_global: int, world: int, args) -> tuple[torch.Tensor, torch.Tensor]:
    """Bort's KD loss on this rank's micro-batch, scaled to its share of the per-token mean over the global batch
    (times the world size, as DDP/FSDP average gradients; the same scaling DistillationTrainer uses), and this
    rank's share without that factor, for logging (summed over ranks: the step's per-token mean)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    keep = batch["labels"] != IGNORE_INDEX
    with torch.no_grad():
        t_logits = masked_teacher_logits(teacher, batch["input_ids"], batch["attention_mask"], keep)
    kd = logit_kd_loss(out.logits, t_logits, out.labels, temperature=args.temperature, w_mlm=args.w_mlm, w_kd=args.w_kd)
    n_local = out.labels.numel()
    return (scale_to_global_tokens(kd.loss, n_local, n_global, world),
            scale_to_global_tokens(kd.loss, n_local, n_global).detach())


def run(strategy: str, args, config, teacher, blocks, collator, rank: int, world: int) -> tuple[list[float], object]:
    model = build_student(config, args.seed)
    if strategy == "ddp":
        model = DDP(model)
    elif strategy == "hsdp":
        model, _ = apply_hsdp(model, args.replicate, args.shard)
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    optim = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    per_rank = args.global_batch // world
    losses = []
    for step in range(args.steps):
        global_ids = list(range(step * args.global_batch, (step + 1) * args.global_batch))
        full = collator([blocks[i] for i in global_ids])  # static masks: identical on every rank / world size
        n_global = int((full["labels"] != IGNORE_INDEX).sum())
        mine = slice(rank * per_rank, (rank + 1) * per_rank)
        batch = {k: v[mine] for k, v in full.items()}
        loss, logged = kd_step_loss(model, teacher, batch, n_global, world, args)
        optim.zero_grad(set_to_none=True)
        loss.backward()  # DDP: all-reduce; HSDP: reduce-scatter in the shard group, all-reduce across replicas
        optim.step()
        dist.all_reduce(logged)  # sum of the per-token shares = the global per-token mean
        losses.append(float(logged))
    return losses, model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bortify.pretraining.distributed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student_config", required=True, help="student BertConfig (dir, config.json or name)")
    parser.add_argument("--teacher", default="embedded:splade-tiny", help="masked-LM teacher (logit KD)")
    parser.add_argument("--corpus", default="embedded:corpus", help="raw-text corpus")
    parser.add_argument("--max_train_texts", type=int, default=400, help="texts to pack (small: a test run)")
    parser.add_argument("--output_dir", required=True, help="where rank 0 writes the report and the checkpoint")
    parser.add_argument("--strategies", default="ddp,hsdp", help="comma-separated: ddp, hsdp")
    parser.add_argument("--replicate", type=int, default=2, help="HSDP replicate groups (MiCS: nodes)")
    parser.add_argument("--shard", type=int, default=2, help="HSDP shard group size (MiCS: GPUs per node)")
    parser.add_argument("--steps", type=int, default=4, help="optimiser steps")
    parser.add_argument("--global_batch", type=int, default=8, help="blocks per step over all ranks")
    parser.add_argument("--seq_len", type=int, default=32, help="block length")
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="AdamW learning rate")
    parser.add_argument("--temperature", type=float, default=2.0, help="KD temperature T")
    parser.add_argument("--w_mlm", type=float, default=0.1, help="weight of the MLM cross-entropy")
    parser.add_argument("--w_kd", type=float, default=0.5, help="weight of T²·KL")
    parser.add_argument("--seed", type=int, default=42, help="seed of the student init and the masks")
    args = parser.parse_args(argv)

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if "hsdp" in strategies and args.replicate * args.shard != world:
        raise SystemExit(f"replicate {args.replicate} x shard {args.shard} must equal the world size {world}.")
    if args.global_batch % world:
        raise SystemExit(f"global_batch {args.global_batch} must be divisible by the world size {world}.")
    torch.set_num_threads(1)
    config = load_student_config(args.student_config)
    teacher_path = resolve_model(args.teacher)
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    teacher = AutoModelForMaskedLM.from_pretrained(teacher_path, use_safetensors=True).eval().requires_grad_(False)
    from bortify.utils import check_finite_weights

    check_finite_weights(teacher, f"The teacher {args.teacher!r} ({teacher_path})")
    blocks, _ = load_pretraining_data(args.corpus, tokenizer, seq_len=args.seq_len, max_train_texts=args.max_train_texts,
                                      seed=args.seed)
    if len(blocks) < args.steps * args.global_batch:
        raise SystemExit(f"only {len(blocks)} blocks for {args.steps} steps of {args.global_batch}; raise --max_train_texts.")
    collator = make_collator(tokenizer, masking="static", seed=args.seed)

    report = {"world_size": world, "replicate": args.replicate, "shard": args.shard, "steps": args.steps,
              "global_batch": args.global_batch, "seq_len": args.seq_len, "losses": {}, "seconds": {}}
    out = Path(args.output_dir)
    for strategy in strategies:
        start = time.perf_counter()
        losses, model = run(strategy, args, config, teacher, blocks, collator, rank, world)
        report["losses"][strategy] = losses
        report["seconds"][strategy] = round(time.perf_counter() - start, 2)
        if strategy == "hsdp":
            # Gather the sharded parameters (DTensors) into one full state dict on CPU; rank 0 saves it.
            state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            if rank == 0:
                student_sd = {k[len("student."):]: v for k, v in state.items() if k.startswith("student.")}
                BertForMaskedLM(config).save_pretrained(out / "hsdp", state_dict=student_sd)
                tokenizer.save_pretrained(out / "hsdp")
                if hasattr(model, "student"):
                    report["shard_shape_rank0"] = list(model.student.bert.embeddings.word_embeddings.weight.to_local().shape)
        dist.barrier()
    if rank == 0:
        write_json_atomic(out / "distributed_report.json", report)
        print({k: [round(x, 5) for x in v] for k, v in report["losses"].items()}, flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
