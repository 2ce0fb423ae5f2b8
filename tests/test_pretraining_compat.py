"""`bortify pretrain --compatible_with OLD` (BCT, docs/methods/04-updates.md §4): the compat collator, the head's save/load,
bad input before training (case table), a tiny end-to-end run whose output loads with sentence-transformers, and
one real-model run against the packaged all-MiniLM-L6-v2 (slow)."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from casetable import Case, run_case
from helpers import KILLER

from bortify.compatible_embeddings.sentence import SentenceSpec, read_sentence_folder, write_sentence_folder
from bortify.pretraining.compat import (CompatCollator, CompatData, CompatError, CompatHead,
                                        plan_compat)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- pieces -------------------------------------------------------------------------------------------------

def test_collator_adds_a_padded_compat_batch_and_sees_every_text_before_repeating():
    data = CompatData([[101, 5, 102], [101, 6, 7, 8, 102], [101, 9, 102]], torch.eye(3), SentenceSpec())
    collator = CompatCollator(lambda rows: {"input_ids": torch.tensor(rows)}, data, batch_size=2, pad_token_id=0,
                              seed=3)
    first, second = collator([[1, 2]]), collator([[3, 4]])
    assert first["input_ids"].tolist() == [[1, 2]]
    seen = []
    for batch in (first, second):
        ids, mask, target = batch["compat_input_ids"], batch["compat_attention_mask"], batch["compat_target"]
        assert ids.shape[0] == mask.shape[0] == target.shape[0] == 2
        for row, m, t in zip(ids.tolist(), mask.tolist(), target):
            text = [x for x, keep in zip(row, m) if keep]
            i = data.input_ids.index(text)  # real tokens are exactly the text, the rest is padding
            assert torch.equal(t, data.targets[i]) and all(x == 0 for x, keep in zip(row, m) if not keep)
            seen.append(i)
    assert sorted(seen[:3]) == [0, 1, 2]  # one full pass before any text repeats
    again = CompatCollator(lambda rows: {}, data, batch_size=2, pad_token_id=0, seed=3)
    assert torch.equal(again([])["compat_target"], first["compat_target"])  # seeded
    with pytest.raises(ValueError, match="compat_batch_size"):
        CompatCollator(lambda rows: {}, data, batch_size=0, pad_token_id=0)


def test_head_is_pool_dense_normalize_and_round_trips(tmp_path, tiny_bert_config):
    from transformers import BertModel

    encoder = BertModel(tiny_bert_config, add_pooling_layer=False).eval()
    head = CompatHead(32, 12, SentenceSpec("mean", True, 64))
    ids, mask = torch.tensor([[101, 7, 8, 102, 0]]), torch.tensor([[1, 1, 1, 1, 0]])
    emb = head(encoder, ids, mask)
    hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    manual = nn.functional.normalize(head.projection(hidden[:, :4].mean(1)), dim=-1)
    assert torch.allclose(emb, manual, atol=1e-6) and emb.shape == (1, 12)
    head.save(tmp_path)
    other = CompatHead(32, 12, SentenceSpec())
    other.load(tmp_path)
    assert torch.equal(other.projection.weight, head.projection.weight)
    with pytest.raises(ValueError, match="2_Dense"):
        CompatHead(32, 12, SentenceSpec()).load(tmp_path / "missing")


def test_least_squares_init_starts_the_projection_near_the_old_space(tiny_bert_config):
    from transformers import BertModel

    from bortify.compatible_embeddings.losses import compatibility_loss
    from bortify.pretraining.compat import init_projection

    torch.manual_seed(0)
    student = BertModel(tiny_bert_config, add_pooling_layer=False).eval()
    old = BertModel(tiny_bert_config, add_pooling_layer=False).eval()
    ids = [[101, *torch.randint(1000, 2000, (n,)).tolist(), 102] for n in range(3, 43)]
    spec = SentenceSpec("mean", True)
    with torch.no_grad():  # the "old model": another network's pooled states through a fixed map, normalised
        fixed = nn.Linear(32, 16)
        targets = torch.cat([nn.functional.normalize(fixed(old(input_ids=torch.tensor([r])).last_hidden_state.mean(1)),
                                                     dim=-1) for r in ids])
    data = CompatData(ids, targets, spec)
    head = CompatHead(32, 16, spec)

    def loss():
        with torch.no_grad():
            emb = torch.cat([head(student, torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long)) for r in ids])
        return float(compatibility_loss(emb, targets))

    before = loss()
    init_projection(head, student, data, pad_token_id=0, batch_size=7)
    assert loss() < before - 0.1


def test_plan_reads_the_old_models_pooling(tmp_path, tiny_bert_config):
    from transformers import BertModel

    assert plan_compat(None, "embedded:rotten-tomatoes") is None
    old = tmp_path / "old"
    BertModel(tiny_bert_config).save_pretrained(old)
    write_sentence_folder(old, hidden_size=32, spec=SentenceSpec("cls", False, 100))
    plan = plan_compat(str(old), "none")
    assert plan.spec == SentenceSpec("cls", False, 100) and plan.eval_texts is None
    plain = tmp_path / "plain"
    BertModel(tiny_bert_config).save_pretrained(plain)
    assert plan_compat(str(plain), "none").spec == SentenceSpec("mean", True)  # sentence-transformers' default
    with pytest.raises(CompatError, match="compatible_with"):
        plan_compat(str(tmp_path / "nothing"), "none")


# ---- bad input: exit 2, before training, nothing changed ----------------------------------------------------

def _setup(teacher):
    def setup(root: Path):
        from transformers import BertConfig

        shutil.copytree(teacher, root / "teacher")
        BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                   max_position_embeddings=64).save_pretrained(root / "student")
        (root / "corpus.txt").write_text("\n".join(f"line {i} about films and the sea." for i in range(200)) + "\n")
        (root / "labels.csv").write_text("words,gold\nnice,1\nbad,0\n")
        return {}
    return setup


def _argv(**changes):
    flags = {"student_config": "{root}/student", "teacher": "{root}/teacher", "corpus": "{root}/corpus.txt",
             "output_dir": "{root}/out", "seq_len": "32", "max_steps": "2", "per_device_train_batch_size": "2",
             "save_strategy": "no", "disable_tqdm": "true", "compatible_with": "{root}/teacher"}
    flags.update(changes)
    argv = ["pretrain", "--use_cpu"]
    for key, value in flags.items():
        argv += [f"--{key}", value]
    return argv


CASES = [
    Case("compat-old-missing", _argv(compatible_with="{root}/no-such-model"), r"compatible_with .*no-such-model"),
    Case("compat-old-not-a-model", _argv(compatible_with="{root}/corpus.txt"), r"compatible_with"),
    Case("compat-eval-missing", _argv(compat_eval_dataset="{root}/nope.csv"), r"compat_eval_dataset .*nope\.csv"),
    Case("compat-eval-no-label", _argv(compat_eval_dataset="{root}/labels.csv"), r"compat_eval_dataset.*column"),
    Case("compat-loss-unknown", _argv(compat_loss="l1"), r"compat_loss must be one of"),
    Case("compat-negative-weight", _argv(w_compat="-1"), r"w_compat must be >= 0"),
    Case("compat-batch-zero", _argv(compat_batch_size="0"), r"compat_batch_size"),
    Case("compat-eval-k-zero", _argv(compat_eval_k="0"), r"compat_eval_k must be >= 1"),
    Case("compat-output-is-old", _argv(compatible_with="{root}/teacher", output_dir="{root}/teacher"),
         r"compatible_with|teacher"),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_input(case, tiny_teacher, tmp_path, monkeypatch, capsys):
    case.setup = _setup(tiny_teacher)
    run_case(case, tmp_path, monkeypatch, capsys)


# ---- end to end ---------------------------------------------------------------------------------------------

def _config(tmp_path, teacher: str, old: str, corpus, **more) -> dict:
    """A tiny compatible pretraining run's settings (student config and corpus written under tmp_path)."""
    from transformers import BertConfig

    BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=64).save_pretrained(tmp_path / "student")
    (tmp_path / "corpus.txt").write_text("\n".join(corpus["text"][:800]) + "\n", encoding="utf-8")
    return {"student_config": str(tmp_path / "student"), "teacher": teacher, "corpus": str(tmp_path / "corpus.txt"),
            "seq_len": 32, "masking": "static", "max_heldout_blocks": 16, "output_dir": str(tmp_path / "out"),
            "max_steps": 12, "per_device_train_batch_size": 8, "learning_rate": 2e-3, "logging_steps": 4,
            "save_steps": 6, "use_cpu": True, "disable_tqdm": True, "seed": 7, "compatible_with": old,
            "compat_batch_size": 16, "compat_eval_gallery": 120, "compat_eval_queries": 60, **more}


def _run(tmp_path, teacher: str, old: str, corpus, **more):
    from bortify.pipeline import run_config

    return run_config("pretrain", _config(tmp_path, teacher, old, corpus, **more)), tmp_path / "out"


@pytest.mark.slow
def test_tiny_run_writes_a_sentence_transformers_student(tmp_path, tiny_teacher, corpus):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from bortify.compatible_embeddings.sentence import SentenceEncoder

    # the old model: a sentence-transformers folder with its own Dense (16 -> 24) and no normalisation
    old = tmp_path / "old"
    shutil.copytree(tiny_teacher, old)
    write_sentence_folder(old, hidden_size=16, spec=SentenceSpec("mean", False, 48), projection=nn.Linear(16, 24))
    report, out = _run(tmp_path, str(tiny_teacher), str(old), corpus)
    c = report.compatibility
    assert c.projection == [32, 24] and c.pooling == "mean" and c.normalized is False
    assert c.train_texts == 12 * 16 and c.eval_dataset == "embedded:rotten-tomatoes"
    assert c.init == "lstsq"
    assert set(c.new_old) == {"knn_accuracy", "recall@1", "recall@5"} and c.gallery == 120 and c.queries == 60
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    compat = [h["loss_compat"] for h in history if "loss_compat" in h]
    assert len(compat) == 3 and compat[-1] < compat[0]  # the compatibility loss is trained
    assert any("compatible with" in line for line in report.summary_lines())
    # the checkpoint of a resumable run carries the projection too
    assert read_sentence_folder(out / "checkpoint-6")[2] is not None
    # sentence-transformers loads the output, and encodes as the student's own forward does
    texts = ["A gripping, beautifully acted film.", "Dull and far too long."]
    st = SentenceTransformer(str(out), device="cpu")
    encoder, spec, projection = read_sentence_folder(out)
    mine = SentenceEncoder(AutoModel.from_pretrained(out), AutoTokenizer.from_pretrained(out), spec, projection)(texts)
    assert torch.allclose(torch.as_tensor(st.encode(texts)), mine, atol=1e-5)
    assert st.encode(texts).shape == (2, 24)


@pytest.mark.slow
def test_real_old_model_minilm(tmp_path, tiny_teacher, corpus, minilm_path):
    """The packaged all-MiniLM-L6-v2 as the old model (the demo's teacher), a tiny student, a few steps: the
    student's embeddings, through sentence-transformers, move towards MiniLM's (cosine up from the untrained
    projection) and the folder's vectors are comparable with MiniLM's (same width, unit length)."""
    from sentence_transformers import SentenceTransformer

    from bortify.pretraining.compat import load_old_encoder

    report, out = _run(tmp_path, str(tiny_teacher), "embedded:all-MiniLM-L6-v2", corpus, max_steps=20,
                       compat_eval_gallery=200, compat_eval_queries=100)
    c = report.compatibility
    assert c.projection == [32, 384] and c.normalized is True and c.old_model == "embedded:all-MiniLM-L6-v2"
    assert c.old_old["knn_accuracy"] > 0.6  # MiniLM against itself is a real sentiment retriever
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    compat = [h["loss_compat"] for h in history if "loss_compat" in h]
    assert compat[-1] < compat[0]
    texts = ["A gripping, beautifully acted film.", "Dull and far too long.", "The sea was calm that night."]
    new = torch.as_tensor(SentenceTransformer(str(out), device="cpu").encode(texts))
    old = load_old_encoder(minilm_path)(texts)
    assert new.shape == old.shape == (3, 384)
    assert torch.allclose(new.norm(dim=-1), torch.ones(3), atol=1e-5)
    # unrelated 384-d vectors have cosine ~0 (a fresh projection: |cos| < 0.1); 20 tiny steps already give ~0.3
    assert float(nn.functional.cosine_similarity(new, old).mean()) > 0.15
    assert c.mean_cosine_new_old > 0.15


@pytest.mark.slow
def test_a_killed_compatible_run_resumes_with_its_trained_projection(tmp_path, tiny_teacher, corpus):
    """Crash right after checkpoint-6 of 12, re-run the same command: the projection comes back from the checkpoint's
    2_Dense (not re-initialised), so the resumed run ends where the uninterrupted one does."""
    import os
    import subprocess

    old = tmp_path / "old"
    shutil.copytree(tiny_teacher, old)
    write_sentence_folder(old, hidden_size=16, spec=SentenceSpec("mean", False, 48), projection=nn.Linear(16, 24))
    config = _config(tmp_path, str(tiny_teacher), str(old), corpus, torch_threads=1)
    flags = [f"--{k}={v}" for k, v in config.items()]
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "KILL_AT": "6", "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    ref_out = tmp_path / "reference"  # the same command, never interrupted
    ref = subprocess.run([sys.executable, "-m", "bortify.cli", "pretrain", *flags, f"--output_dir={ref_out}"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = subprocess.run([sys.executable, "-c", KILLER, "pretrain", *flags], env=env, capture_output=True,
                            text=True, timeout=600)
    out = tmp_path / "out"
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert read_sentence_folder(out / "checkpoint-6")[2] is not None and not (out / "report.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "bortify.cli", "pretrain", *flags], env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["resumed_from"].endswith("checkpoint-6") and report["global_step"] == 12

    def compat_losses(folder):
        history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
        return [h["loss_compat"] for h in history if "loss_compat" in h]

    assert compat_losses(out)[-1] == pytest.approx(compat_losses(ref_out)[-1], rel=1e-4)
    _, _, projection = read_sentence_folder(out)
    _, _, ref_projection = read_sentence_folder(ref_out)
    assert torch.allclose(projection.weight, ref_projection.weight, atol=1e-5)
