"""`bortify run RECIPE`: the whole factory, one stage directory each, resumable.

Each stage lives in a module that exposes::

    def run_stage(config: dict, *, overwrite: bool = False) -> dict

`config` is the recipe's section for that stage with `output_dir` set to `<run dir>/<stage>` and the
stage's inputs wired from earlier stages (only where the recipe leaves them unset). It returns a small
JSON-able summary. When a stage returns, the pipeline writes `<stage dir>/stage_done.json` (the summary);
a re-run skips stages that have one, so an interrupted run resumes where it stopped (each stage also
resumes inside itself where it can). The file records the stage's recipe section: if the recipe has changed
since, the run stops before any work and names the changed keys (redo with --overwrite). The next stage reads only the previous stage's output directory.

Two exceptions: the card stage's record sits beside its folder (`<run>/card.stage_done.json`), because the
card folder is the release that gets pushed and must hold nothing but the release; and a stage that reports
`skipped` (push with no Hub configured) gets no record at all, so a later run with a token pushes.
Everything the pipeline writes (records, summary.json) passes through `redact_secrets`: a Hub token never
lands in a file, and recipes holding one are refused when loaded (bortify.recipes.check_no_secrets).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bortify.recipes import STAGE_NAMES as RECIPE_STAGES, RecipeError, check_keys, check_values, load_recipe
from bortify.utils import redact_secrets, user_error_types, write_json_atomic


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    # config key of this stage -> name of the earlier stage whose output directory fills it
    inputs: dict[str, str] = field(default_factory=dict)
    # config key -> the whole {stage: output dir} mapping, for stages that read every report (the card)
    all_outputs_key: str | None = None
    # False: the stage's output directory is a release folder, so its done record is kept beside it
    record_inside: bool = True
    # config key -> (section, key) of another stage's recipe section whose value the stage may use
    from_sections: dict[str, tuple[str, str]] = field(default_factory=dict)
    # "module:attribute" of the dataclasses the stage parses its section into (checked before any stage runs)
    arguments: tuple[str, ...] = ()


STAGES: list[Stage] = [
    Stage("extract", "bortify.extraction.stage",
          arguments=("bortify.extraction.arguments:ExtractionArguments", "bortify.extraction.arguments:EstimatorArguments")),
    Stage("pretrain", "bortify.pretraining.stage", inputs={"student_config": "extract"},
          arguments=("bortify.pretraining.arguments:ModelArguments", "bortify.pretraining.arguments:DataArguments",
                     "bortify.pretraining.arguments:DistillationArguments")),
    Stage("finetune", "bortify.finetuning.stage", inputs={"model": "pretrain"},
          arguments=("bortify.finetuning.arguments:ARGUMENT_CLASSES",)),
    Stage("compress", "bortify.compression.stage", inputs={"model": "finetune"}),
    Stage("card", "bortify.hub.card_stage", all_outputs_key="stage_dirs", record_inside=False,
          from_sections={"push_repo_id": ("push", "repo_id")},  # the card's how-to-load names the pushed repo
          arguments=("bortify.hub.card_stage:CardArguments", "bortify.hub.card:CardOptions")),
    Stage("push", "bortify.hub.push_stage", inputs={"model_dir": "card"},
          arguments=("bortify.hub.push:PushArguments",)),
]
STAGE_NAMES = [s.name for s in STAGES]
assert tuple(STAGE_NAMES) == RECIPE_STAGES, "bortify.recipes.STAGE_NAMES and pipeline.STAGES must list the same stages"
DONE_FILE = "stage_done.json"
RECIPE_KEY = "recipe_section"  # the stage's recipe section as run, recorded in DONE_FILE


def done_path(run_dir: Path, stage: Stage) -> Path:
    """Where the pipeline records that `stage` finished (see the module docstring)."""
    return run_dir / stage.name / DONE_FILE if stage.record_inside else run_dir / f"{stage.name}.{DONE_FILE}"


def find_done(run_dir: Path, stage: Stage) -> Path | None:
    """The stage's done record, if any (also the old place inside the folder, for runs made before the move)."""
    for path in (done_path(run_dir, stage), run_dir / stage.name / DONE_FILE):
        if path.is_file():
            return path
    return None


def _read_done(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RecipeError(f"{path} is unreadable ({exc}); delete it to redo that stage.") from None
    return data if isinstance(data, dict) else {}


def argument_classes(stage: Stage) -> tuple[type, ...]:
    """The dataclasses named by `stage.arguments` (a tuple attribute is flattened); () if one cannot be imported."""
    classes: list[type] = []
    for spec in stage.arguments:
        module_name, attr = spec.split(":")
        try:
            value = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):
            return ()  # the stage checks its own section when it runs
        classes += list(value) if isinstance(value, (tuple, list)) else [value]
    return tuple(classes)


def check_sections(recipe: dict, selected: list[Stage], recipe_path) -> None:
    """Unknown keys and values of the wrong type in any selected section, before the first stage runs."""
    for stage in selected:
        classes = argument_classes(stage)
        if classes:
            where = f"{recipe_path} [{stage.name}]"
            check_keys(recipe[stage.name] or {}, classes, where)
            check_values(recipe[stage.name] or {}, classes, where)


def _write_record(path: Path, obj: dict) -> None:
    write_json_atomic(path, redact_secrets(obj))


def run_recipe(recipe_path: str | os.PathLike, output_dir: str | os.PathLike | None = None, *,
               stages: list[str] | None = None, overwrite: bool = False) -> dict:
    recipe = load_recipe(recipe_path)
    unknown = sorted(set(recipe) - set(STAGE_NAMES) - {"name", "description", "output_dir"})
    if unknown:
        raise RecipeError(f"Unknown section(s) {unknown} in {recipe_path}; stages are {STAGE_NAMES}.")
    run_dir = Path(output_dir or recipe.get("output_dir") or Path("runs") / Path(recipe_path).stem)
    selected = [s for s in STAGES if s.name in recipe and (not stages or s.name in stages)]
    if stages:
        missing = sorted(set(stages) - {s.name for s in selected})
        if missing:
            raise RecipeError(f"Stage(s) {missing} not in recipe {recipe_path} (it has {[s for s in recipe if s in STAGE_NAMES]}).")
    if not selected:
        raise RecipeError(f"Recipe {recipe_path} has no stage sections; expected some of {STAGE_NAMES}.")
    for stage in selected:
        if not isinstance(recipe[stage.name] or {}, dict):
            raise RecipeError(f"Recipe {recipe_path}: section {stage.name!r} must be a mapping of settings, got "
                              f"{type(recipe[stage.name]).__name__} {recipe[stage.name]!r}.")

    # Import every selected stage before any long work, so a missing stage fails fast.
    modules = {}
    for stage in selected:
        try:
            modules[stage.name] = importlib.import_module(stage.module)
        except ModuleNotFoundError as exc:
            raise RecipeError(f"Stage {stage.name!r} is not available in this bortify ({exc}).") from exc
    check_sections(recipe, selected, recipe_path)

    # A finished stage made from different recipe settings must not be reused silently (nor redone without
    # --overwrite): checked for every selected stage before any long work.
    if not overwrite:
        changed = {}  # stage name -> the recipe keys that differ from the finished stage's
        for stage in selected:
            done = find_done(run_dir, stage)
            made_with = _read_done(done).get(RECIPE_KEY) if done else None
            current = recipe[stage.name] or {}
            if made_with is not None and made_with != current:
                changed[stage.name] = sorted(k for k in made_with.keys() | current.keys()
                                             if made_with.get(k) != current.get(k))
        if changed:
            names = [s.name for s in selected]
            redo = names[min(names.index(n) for n in changed):]
            listed = "; ".join(f"{n} (changed: {', '.join(keys)})" for n, keys in changed.items())
            raise RecipeError(
                f"{run_dir} holds stages made with other settings than {recipe_path}: {listed}. Redo them and the "
                f"stages after them with `--overwrite --stages {' '.join(redo)}`, or pass another --output_dir.")

    run_dir.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, str] = {}
    summaries: dict[str, dict] = {}
    for stage in STAGES:  # earlier finished stages still provide their outputs
        if stage.name in recipe and find_done(run_dir, stage):
            outputs[stage.name] = str(run_dir / stage.name)
    for stage in selected:
        stage_dir = run_dir / stage.name
        done = find_done(run_dir, stage)
        if done and not overwrite:
            summaries[stage.name] = _read_done(done)
            print(f"[bortify run] {stage.name}: already done, skipping ({stage_dir})", flush=True)
            outputs[stage.name] = str(stage_dir)
            continue
        config = dict(recipe[stage.name] or {})
        config["output_dir"] = str(stage_dir)
        for key, source in stage.inputs.items():
            if config.get(key) is None:
                if source not in outputs:
                    raise RecipeError(f"Stage {stage.name!r} needs {key!r}: set it in the recipe or run stage {source!r} first.")
                config[key] = outputs[source]
        if stage.all_outputs_key and config.get(stage.all_outputs_key) is None:
            config[stage.all_outputs_key] = dict(outputs)
        for key, (section, name) in stage.from_sections.items():
            value = (recipe.get(section) or {}).get(name) if isinstance(recipe.get(section), dict) else None
            if value is not None:
                config[key] = value
        print(f"[bortify run] {stage.name}: starting -> {stage_dir}", flush=True)
        start = time.perf_counter()
        summary = modules[stage.name].run_stage(config, overwrite=overwrite) or {}
        summary = {"stage": stage.name, "seconds": round(time.perf_counter() - start, 1), **summary,
                   RECIPE_KEY: recipe[stage.name] or {}}
        summary = redact_secrets(summary)
        summaries[stage.name] = summary
        if summary.get("skipped"):  # not done: a later run tries again (e.g. push once a token is set)
            print(f"[bortify run] {stage.name}: skipped, not recorded as done", flush=True)
            continue
        record = done_path(run_dir, stage)
        _write_record(record, summary)
        if record != stage_dir / DONE_FILE and (stage_dir / DONE_FILE).is_file():
            (stage_dir / DONE_FILE).unlink()  # an old run's record inside a release folder
        outputs[stage.name] = str(stage_dir)
    result = {"run_dir": str(run_dir), "stages": summaries}
    _write_record(run_dir / "summary.json", result)
    return result


def print_summary(result: dict) -> None:
    print("\n=== bortify run: summary ===")
    result = redact_secrets(result)
    for name, summary in result["stages"].items():
        lines = summary.get("summary_lines") or [
            f"{k}: {v}" for k, v in summary.items() if k not in ("stage", "summary_lines", RECIPE_KEY)
        ]
        print(f"[{name}] ({summary.get('seconds', '?')} s)" + (" skipped" if summary.get("skipped") else ""))
        for line in lines:
            print(f"    {line}")
    print(f"All outputs under {result['run_dir']} (summary.json lists them).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bortify run",
        description="Run a whole recipe (extract -> pretrain -> finetune -> compress -> card -> push). Each "
        "stage writes to <output_dir>/<stage>; finished stages are skipped on re-run.",
    )
    parser.add_argument("recipe", help="YAML recipe with one section per stage, e.g. recipes/demo.yaml")
    parser.add_argument("--output_dir", default=None, help="run directory (default: recipe's output_dir or runs/<recipe name>)")
    parser.add_argument("--stages", nargs="+", default=None,
                        help=f"subset of {' '.join(STAGE_NAMES)} (space- or comma-separated)")
    parser.add_argument("--overwrite", action="store_true", help="re-run finished stages and replace their outputs")
    args = parser.parse_args(argv)
    stages = [s.strip() for arg in args.stages for s in arg.split(",") if s.strip()] if args.stages else None
    try:
        result = run_recipe(args.recipe, args.output_dir, stages=stages, overwrite=args.overwrite)
    except user_error_types() as exc:  # every stage's user errors (bortify.utils.USER_ERRORS): a message, no traceback
        print(f"bortify run: error: {redact_secrets(str(exc))}", file=sys.stderr)
        return 2
    print_summary(result)
    return 0
