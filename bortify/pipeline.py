"""Running stages from the stage table (bortify.stages): one stage (`bortify <stage>`) or a recipe (`bortify run`).

One stage: `run_command(name, argv)` parses flags and `--config` into the stage's dataclasses, calls its library
function, prints the report's summary lines, and turns a user error into one `bortify <stage>: error: ...` line
(exit code 2). `run_config(name, config)` does the same from a mapping of settings (a recipe section).

`bortify run RECIPE`: the whole factory, one stage directory each, resumable. Each selected stage gets its
recipe section with `output_dir` set to `<run dir>/<stage>` and the inputs the table names filled from earlier
stages' output directories (only where the recipe leaves them unset). When a stage returns, the pipeline writes
`<stage dir>/stage_done.json` (the report's `record()`); a re-run skips stages that have one, so an interrupted run
resumes where it stopped (each stage also resumes inside itself where it can). The file records the stage's
recipe section: if the recipe has changed since, the run stops before any work and names the changed keys (redo
with --overwrite). The next stage reads only the previous stage's output directory, and `<run>/heldout.json`: the
run's final test texts (from the finetune section's data options), written before the first stage and kept out
of every stage's data (docs/methods/09-heldout.md §9).

Two exceptions: a stage whose folder is a release (the card) keeps its record beside the folder
(`<run>/card.stage_done.json`), because that folder is what gets pushed and must hold nothing but the release;
and a stage that reports `skipped` (push with no Hub configured) gets no record at all, so a later run with a
token pushes. Everything the pipeline writes (records, summary.json) passes through `redact_secrets`: a Hub token
never lands in a file, and recipes holding one are refused when loaded (bortify.recipes.check_no_secrets).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from bortify.recipes import RecipeError, args_from_dict, check_keys, check_values, load_recipe, parse_stage_args
from bortify.reports import Report, write_report
from bortify.stages import PLANNED_STAGES, STAGE_NAMES, STAGES, StageSpec
from bortify.utils import SECRET_KEYS, redact_secrets, user_error_types, write_json_atomic

DONE_FILE = "stage_done.json"
RECIPE_KEY = "recipe_section"  # the stage's recipe section as run, recorded in DONE_FILE
RECIPE_KEYS = {"name", "description", "output_dir"}  # a recipe's top-level keys besides the stage sections


# ---- one stage ------------------------------------------------------------------------------------------

def stage_spec(stage: str | StageSpec) -> StageSpec:
    """The table's entry for a stage name (a StageSpec passes through)."""
    if isinstance(stage, StageSpec):
        return stage
    if stage in PLANNED_STAGES:
        raise RecipeError(f"The {stage} stage is not available yet in this bortify ({PLANNED_STAGES[stage]} describes "
                          f"the method). Remove the `{stage}` section from the recipe to run the other stages.")
    for spec in STAGES:
        if spec.name == stage:
            return spec
    raise RecipeError(f"Unknown stage {stage!r}; stages are {_names()}.")


def _names() -> list[str]:
    return [s.name for s in STAGES]


def _field_names(classes: tuple[type, ...]) -> set[str]:
    return {f.name for dc in classes for f in dataclasses.fields(dc) if f.init}


def user_errors() -> tuple[type[BaseException], ...]:
    """What a stage raises for input the user has to fix: bortify's error classes (bortify.utils.USER_ERRORS)
    and the ValueErrors of argument checks."""
    return (ValueError, *user_error_types())


def run_config(name: str | StageSpec, config: dict, *, overwrite: bool = False, in_run: bool = True) -> Report | None:
    """Run stage `name` from a mapping of settings (a recipe section, `output_dir` and the wired inputs included).

    `overwrite` (`bortify run --overwrite`) is or-ed into the section's own. In a run (`in_run`), the stage's
    `run_options` apply, a stage that redoes by replacing gets overwrite, and a stage whose arguments have no
    output_dir gets its report written to `config["output_dir"]` (push: `<run>/push/report.json`)."""
    spec = stage_spec(name)
    where = f"recipe [{spec.name}]"
    config = dict(config)
    secrets = sorted(k for k in config if k.lower() in SECRET_KEYS and config[k])
    if secrets:  # recipes are checked when loaded (check_no_secrets); a direct caller here
        raise RecipeError(f"{where} sets {', '.join(secrets)}: tokens do not belong in recipes. Delete it and set "
                          "HF_TOKEN or run `hf auth login`.")
    classes = spec.argument_classes()
    fields = _field_names(classes)
    report_dir = config.pop("output_dir", None) if "output_dir" not in fields else None
    if "overwrite" in fields:
        config["overwrite"] = bool(config.get("overwrite")) or overwrite or (in_run and spec.redo_replaces)
    args = args_from_dict(classes, config, where=where)
    report = spec.function()(*args, **(spec.run_options if in_run else {}))
    if report_dir is not None and report is not None:
        write_report(report_dir, report)
    return report


def run_command(name: str, argv: list[str] | None = None) -> int:
    """`bortify <name> [flags] [--config recipe.yaml]`: run the stage, print its summary; user errors -> exit 2."""
    spec = stage_spec(name)
    argv = list(sys.argv[1:] if argv is None else argv)
    # HfArgumentParser has no positionals: leading values fill the spec's positional option(s), in order
    options = (spec.positional,) if isinstance(spec.positional, str) else tuple(spec.positional or ())
    lead = []
    while argv and len(lead) < len(options) and not argv[0].startswith("-"):
        lead.append(argv.pop(0))
    argv = [a for option, value in zip(options, lead) for a in (f"--{option}", value)] + argv
    try:
        args = parse_stage_args(spec.argument_classes(), argv, stage=name, prog=f"bortify {name}",
                                description=spec.description)
        report = spec.function()(*args)
    except user_errors() as exc:
        print(f"bortify {name}: error: {redact_secrets(str(exc))}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)  # 2; a failed release gate has its own (bortify.compare)
    if report is not None:  # None: not the main process of a distributed run
        print("\n".join(report.summary_lines()))
    return 0


def stage_entry(name: str):
    """`run_stage(config, *, overwrite=False) -> record`: one stage as `bortify run` runs it, for scripts and tests."""

    def run_stage(config: dict, *, overwrite: bool = False) -> dict:
        report = run_config(name, config, overwrite=overwrite)
        return report.record() if report is not None else {}

    run_stage.__doc__ = f"The {name} stage from a recipe section (see bortify.pipeline.run_config)."
    return run_stage


# ---- a recipe -------------------------------------------------------------------------------------------

def stage_config(stage: StageSpec, recipe: dict, outputs: dict[str, str], run_dir: Path,
                 heldout: str | None = None) -> dict:
    """The stage's settings in a run: its recipe section, `output_dir` = <run dir>/<stage>, and every input the
    table names (StageSpec.inputs, .borrow) that the recipe leaves unset; `heldout` (the run's record of its test
    texts, docs/methods/09-heldout.md §9) for the stages that read it."""
    config = dict(recipe.get(stage.name) or {})
    config["output_dir"] = str(run_dir / stage.name)
    if heldout and stage.reads_heldout and config.get("heldout") is None:
        config["heldout"] = heldout
    for key, source in stage.inputs.items():
        if config.get(key) is None:
            if source in outputs:
                config[key] = outputs[source]
            elif key not in stage.optional_inputs:
                raise RecipeError(f"Stage {stage.name!r} needs {key!r}: set it in the recipe or run stage {source!r} first.")
    for key, borrow in stage.borrow.items():
        section = recipe.get(borrow.section)
        value = section.get(borrow.key) if isinstance(section, dict) else None
        if config.get(key) is None and borrow.when(value):
            config[key] = value
    return config


def done_path(run_dir: Path, stage: StageSpec) -> Path:
    """Where the pipeline records that `stage` finished (see the module docstring)."""
    return run_dir / stage.name / DONE_FILE if stage.record_inside else run_dir / f"{stage.name}.{DONE_FILE}"


def find_done(run_dir: Path, stage: StageSpec) -> Path | None:
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


def argument_classes(stage: StageSpec) -> tuple[type, ...]:
    """The stage's dataclasses; () if one cannot be imported (the stage then checks its section when it runs)."""
    try:
        return stage.argument_classes()
    except (ImportError, AttributeError):
        return ()


def check_sections(recipe: dict, selected: list[StageSpec], recipe_path) -> None:
    """Unknown keys and values of the wrong type in any selected section, before the first stage runs."""
    for stage in selected:
        classes = argument_classes(stage)
        if classes:
            where = f"{recipe_path} [{stage.name}]"
            check_keys(recipe[stage.name] or {}, classes, where)
            check_values(recipe[stage.name] or {}, classes, where)


def _write_record(path: Path, obj: dict) -> None:
    write_json_atomic(path, redact_secrets(obj))


def select_stages(recipe: dict, recipe_path, stages: list[str] | None) -> list[StageSpec]:
    """The recipe's stages to run, in table order; a recipe's mistakes are refused here, before any work."""
    planned = [name for name in PLANNED_STAGES if name in recipe]
    if planned:
        stage_spec(planned[0])  # raises: not available yet
    unknown = sorted(set(recipe) - set(_names()) - RECIPE_KEYS)
    if unknown:
        raise RecipeError(f"Unknown section(s) {unknown} in {recipe_path}; stages are {_names()}.")
    selected = [s for s in STAGES if s.name in recipe and (not stages or s.name in stages)]
    if stages:
        missing = sorted(set(stages) - {s.name for s in selected})
        if missing:
            raise RecipeError(f"Stage(s) {missing} not in recipe {recipe_path} (it has {[s for s in recipe if s in _names()]}).")
    if not selected:
        raise RecipeError(f"Recipe {recipe_path} has no stage sections; expected some of {_names()}.")
    for stage in selected:
        if not isinstance(recipe[stage.name] or {}, dict):
            raise RecipeError(f"Recipe {recipe_path}: section {stage.name!r} must be a mapping of settings, got "
                              f"{type(recipe[stage.name]).__name__} {recipe[stage.name]!r}.")
    # Import every selected stage before any long work, so a missing stage fails fast.
    for stage in selected:
        try:
            stage.function()
        except ModuleNotFoundError as exc:
            raise RecipeError(f"Stage {stage.name!r} is not available in this bortify ({exc}).") from exc
    return selected


def check_unchanged(recipe: dict, selected: list[StageSpec], run_dir: Path, recipe_path) -> None:
    """A finished stage made from different recipe settings must not be reused silently (nor redone without
    --overwrite): checked for every selected stage before any long work."""
    changed = {}  # stage name -> the recipe keys that differ from the finished stage's
    for stage in selected:
        done = find_done(run_dir, stage)
        made_with = _read_done(done).get(RECIPE_KEY) if done else None
        current = recipe[stage.name] or {}
        if made_with is not None and made_with != current:
            changed[stage.name] = sorted(k for k in made_with.keys() | current.keys() if made_with.get(k) != current.get(k))
    if changed:
        names = [s.name for s in selected]
        redo = names[min(names.index(n) for n in changed):]
        listed = "; ".join(f"{n} (changed: {', '.join(keys)})" for n, keys in changed.items())
        raise RecipeError(
            f"{run_dir} holds stages made with other settings than {recipe_path}: {listed}. Redo them and the "
            f"stages after them with `--overwrite --stages {' '.join(redo)}`, or pass another --output_dir.")


def run_recipe(recipe_path: str | os.PathLike, output_dir: str | os.PathLike | None = None, *,
               stages: list[str] | None = None, overwrite: bool = False) -> dict:
    recipe = load_recipe(recipe_path)
    run_dir = Path(output_dir or recipe.get("output_dir") or Path("runs") / Path(recipe_path).stem)
    selected = select_stages(recipe, recipe_path, stages)
    check_sections(recipe, selected, recipe_path)
    if not overwrite:
        check_unchanged(recipe, selected, run_dir, recipe_path)

    run_dir.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, str] = {}
    summaries: dict[str, dict] = {}
    for stage in STAGES:  # earlier finished stages still provide their outputs
        if stage.name in recipe and find_done(run_dir, stage):
            outputs[stage.name] = str(run_dir / stage.name)
    heldout = run_heldout(recipe, selected, run_dir, overwrite)
    for stage in selected:
        stage_dir = run_dir / stage.name
        done = find_done(run_dir, stage)
        if done and not overwrite:
            summaries[stage.name] = _read_done(done)
            print(f"[bortify run] {stage.name}: already done, skipping ({stage_dir})", flush=True)
            outputs[stage.name] = str(stage_dir)
            continue
        config = stage_config(stage, recipe, outputs, run_dir, heldout)
        print(f"[bortify run] {stage.name}: starting -> {stage_dir}", flush=True)
        start = time.perf_counter()
        report = run_config(stage, config, overwrite=overwrite)
        summary = report.record() if report is not None else {}
        summary = redact_secrets({"stage": stage.name, "seconds": round(time.perf_counter() - start, 1), **summary,
                                  RECIPE_KEY: recipe[stage.name] or {}})
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


def run_heldout(recipe: dict, selected: list[StageSpec], run_dir: Path, overwrite: bool) -> str | None:
    """The run's held-out test texts (docs/methods/09-heldout.md §9): `<run>/heldout.json`, derived from the finetune
    section's data options when a stage that reads data is about to run (rewritten then, so it always matches
    the recipe), or None for a recipe without a finetune section."""
    from bortify.heldout import HELDOUT_FILE, write_run_heldout

    if "finetune" not in recipe:
        return None
    path = run_dir / HELDOUT_FILE
    pending = [s for s in selected if s.reads_heldout and (overwrite or not find_done(run_dir, s))]
    if pending:
        print(f"[bortify run] held-out test split: from the finetune section's data options -> {path}", flush=True)
        write_run_heldout(recipe["finetune"] or {}, run_dir)
    return str(path) if path.is_file() else None


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
        description=f"Run a whole recipe ({' -> '.join(STAGE_NAMES)}). Each stage writes to <output_dir>/<stage>; "
        "finished stages are skipped on re-run.",
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
        return getattr(exc, "exit_code", 2)  # 2; a failed release gate (compare) has its own
    print_summary(result)
    return 0
