"""Extraction end to end: `bortify extract` CLI, recipes, outputs, resume, overwrite, the pipeline stage."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, BertModel

from bortify.extraction import EstimatorArguments, ExtractionArguments, extract
from bortify.extraction.cli import main
from bortify.extraction.costs import Shape, parameter_count
from bortify.extraction.stage import run_stage
from bortify.utils import OutputExistsError

ROOT = Path(__file__).resolve().parents[1]
REPORT_KEYS = {"source", "source_shape", "source_parameters", "source_effective_parameters", "epsilon", "space",
               "dropped_indivisible", "error_estimator", "seq_len", "winner", "candidates", "plot", "error_spread"}
CANDIDATE_KEYS = {"D", "A", "H", "I", "parameters", "effective_parameters", "ops", "latency_s", "error", "W", "bucket",
                  "status"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py


@pytest.mark.slow
def test_help_explains_every_option():
    out = subprocess.run([sys.executable, "-m", "bortify.cli", "extract", "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0
    for flag in ("--source", "--depths", "--epsilon", "--error", "--cost", "--source_vocab_size", "--train_steps",
                 "--learning_rates", "--overwrite", "--config", "--torch_threads"):
        assert flag in out.stdout, flag
    assert "W = ((p(T)-p)/p(T))" in out.stdout


def test_bort_recipe_error_none_offline(tmp_path, capsys):
    out = tmp_path / "bort"
    rc = main(["--config", str(ROOT / "recipes/bort.yaml"), "--error", "none", "--output_dir", str(out),
               "--progress", "false"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "chosen ⟨D,A,H,I⟩" in printed and "bert-large-uncased" in printed
    report = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert len(report["candidates"]) == 300 and report["dropped_indivisible"] == 60
    assert all(CANDIDATE_KEYS <= set(c) for c in report["candidates"])
    assert report["source_shape"] == {"D": 24, "A": 16, "H": 1024, "I": 4096}
    assert report["error_estimator"] == "none" and report["error_spread"]["std"] == 0.0
    trained = [c for c in report["candidates"] if c["status"] == "trained"]
    assert 0 < len(trained) < 300  # ε = 0.1 from the recipe
    best = max(c["W"] for c in trained)
    assert report["winner"]["W"] == best
    # ê = 1: W is the size/cost gain; the FPTAS guarantee against the exhaustive optimum
    p_T, i_T = report["source_parameters"], report["source_ops"]
    exhaustive = max((1 - c["parameters"] / p_T) * (1 - c["ops"] / i_T) for c in report["candidates"])
    assert best >= (1 - report["epsilon"]) * exhaustive
    # config.json: a plain BertConfig that the Auto classes load and build
    config = AutoConfig.from_pretrained(out)
    assert config.model_type == "bert" and config.vocab_size == 50265 and config.type_vocab_size == 1
    w = report["winner"]
    assert (config.num_hidden_layers, config.num_attention_heads, config.hidden_size, config.intermediate_size) == (
        w["D"], w["A"], w["H"], w["I"])
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    assert isinstance(model, BertModel) and model.num_parameters() == w["parameters"]
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # finished output is not overwritten without --overwrite; with it, it is
    rc = main(["--config", str(ROOT / "recipes/bort.yaml"), "--error", "none", "--output_dir", str(out)])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    rc = main(["--config", str(ROOT / "recipes/bort.yaml"), "--error", "none", "--epsilon", "0.3", "--output_dir",
               str(out), "--overwrite", "--progress", "false"])
    assert rc == 0 and json.loads((out / "report.json").read_text())["epsilon"] == 0.3


@pytest.mark.parametrize("argv, message", [
    (["--depths", "2", "--heads", "3", "--hidden_sizes", "128", "--intermediate_sizes", "256"], "empty after dropping 1"),
    (["--epsilon", "1.5"], "epsilon"),
    (["--error", "bleu"], "--error must be one of"),
    (["--source", "/nonexistent/model"], "Could not load"),
])
def test_bad_input_is_a_clear_error_before_work(tmp_path, capsys, argv, message):
    rc = main(["--output_dir", str(tmp_path / "o"), "--progress", "false", *argv])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "report.json").exists()


class Flaky:
    """Deterministic ê that crashes after `fail_after` calls (an interrupted run)."""

    name = "flaky"

    def __init__(self, fail_after=None):
        self.calls, self.fail_after = [], fail_after

    def fingerprint(self):
        return {"error_estimator": "flaky"}

    def __call__(self, shape):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls.append(shape.key())
        return 0.1 + 1.0 / (shape.D * shape.H)  # bigger -> lower error (the ABnC ordering)


def _args(out, **kw):
    base = dict(output_dir=str(out), source="embedded:all-MiniLM-L6-v2", depths=[1, 2, 3], heads=[4], hidden_sizes=[64, 128],
                intermediate_sizes=[128, 256], epsilon=0.0, progress=False)
    return ExtractionArguments(**{**base, **kw})


def test_resume_does_not_retrain_measured_candidates(tmp_path):
    out = tmp_path / "resume"
    first = Flaky(fail_after=5)
    with pytest.raises(KeyboardInterrupt):
        extract(_args(out), estimator=first)
    partial = json.loads((out / "partial_results.json").read_text())
    assert len(partial["results"]) == 5 and not (out / "report.json").exists()
    second = Flaky()
    report = extract(_args(out), estimator=second)
    assert len(second.calls) == 12 - 5 and not set(second.calls) & set(first.calls)
    statuses = [c["status"] for c in report["candidates"]]
    assert statuses.count("cached") == 5 and statuses.count("trained") == 7
    # same settings as an exhaustive run from scratch
    fresh = extract(_args(tmp_path / "fresh"), estimator=Flaky())
    assert fresh["winner"] == report["winner"]
    # a resumed run with other estimator settings is refused, not silently mixed
    (out / "report.json").unlink()
    other = Flaky()
    other.fingerprint = lambda: {"error_estimator": "flaky", "steps": 99}
    with pytest.raises(OutputExistsError, match="different settings"):
        extract(_args(out), estimator=other)


def test_latency_mode_measures_every_candidate(tmp_path):
    report = extract(_args(tmp_path / "lat", cost="latency", depths=[1], hidden_sizes=[64], intermediate_sizes=[128, 256],
                           seq_len=16, latency_batch_size=2, latency_repeats=2, error="none"))
    assert report["cost"] == "latency" and report["source_latency_s"] > 0
    assert all(c["latency_s"] > 0 for c in report["candidates"])


@pytest.mark.slow
def test_pipeline_stage_with_the_sliced_task_estimator(tmp_path):
    """The separating estimator end to end through run_stage (tiny budget): real slices, real Trainer runs."""
    config = dict(output_dir=str(tmp_path / "extract"), source="embedded:all-MiniLM-L6-v2", depths=[1, 2], heads=[4],
                  hidden_sizes=[128], intermediate_sizes=[256], epsilon=0.0, error="sliced-task", train_steps=3,
                  train_batch_size=8, max_seq_length=32, train_samples=64, eval_samples=100, learning_rates=[1e-3],
                  progress=False)
    summary = run_stage(config)
    report = json.loads((tmp_path / "extract" / "report.json").read_text())
    assert report["error_estimator"] == "sliced-task" and report["error_spread"]["n"] == 2
    assert all(0 < c["error"] <= 1 and c["status"] == "trained" for c in report["candidates"])
    assert any("chosen ⟨D,A,H,I⟩" in line for line in summary["summary_lines"])
    assert any("spread" in line for line in summary["summary_lines"])
    w = summary["winner"]
    assert w["parameters"] == parameter_count(Shape(w["D"], w["A"], w["H"], w["I"]))
    with pytest.raises(OutputExistsError):
        run_stage(config)


def test_unknown_recipe_key_is_rejected(tmp_path):
    from bortify.recipes import RecipeError

    with pytest.raises(RecipeError, match="Unknown key"):
        run_stage({"output_dir": str(tmp_path), "depth": [2]})


def test_estimator_arguments_validate():
    with pytest.raises(ValueError, match="learning_rates"):
        EstimatorArguments(learning_rates=[])
    with pytest.raises(ValueError, match="importance"):
        EstimatorArguments(importance="random")
