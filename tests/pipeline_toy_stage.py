"""A test-only stage for exercising bortify.pipeline's wiring and resume logic."""

import json
from pathlib import Path

CALLS: list[dict] = []


def run_stage(config, *, overwrite=False):
    CALLS.append(dict(config))
    out = Path(config["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    if config.get("fail"):
        raise RuntimeError("boom")
    (out / "made.json").write_text(json.dumps(config))
    return {"summary_lines": [f"made {out}"], "input": config.get("input")}
