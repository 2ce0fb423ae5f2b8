"""A test-only stage for exercising bortify.pipeline's wiring and resume logic."""

import json
from pathlib import Path

CALLS: list[dict] = []


def run_stage(config, *, overwrite=False):
    CALLS.append(dict(config))
    out = Path(config["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    if config.get("fail") == "data":
        from bortify.data import DataError

        raise DataError(f"toy data error: {config.get('message', 'no such file')}")
    if config.get("fail") == "interrupt":
        raise KeyboardInterrupt
    if config.get("fail"):
        raise RuntimeError("boom")
    (out / "made.json").write_text(json.dumps(config))
    summary = {"summary_lines": [f"made {out}"], "input": config.get("input")}
    if config.get("skip"):
        summary["skipped"] = True
    if config.get("echo"):  # a stage that (wrongly) puts something secret-looking in its summary
        summary["echo"] = config["echo"]
    return summary
