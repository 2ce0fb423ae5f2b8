"""A test-only stage for exercising bortify.pipeline's wiring and resume logic: a real entry of the stage contract
(arguments dataclass -> library function -> typed report), so the pipeline runs it exactly as a bortify stage."""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bortify.reports import Report
from bortify.stages import StageSpec

CALLS: list[dict] = []


@dataclass
class ToyArguments:
    output_dir: str = field(metadata={"help": "where the toy writes made.json"})
    a: int | None = None
    b: int | None = None
    c: int | None = None
    input: str | None = None  # wired from an earlier stage
    extract_dir: str | None = None  # optional inputs, as the card's
    pretrain_dir: str | None = None
    fail: str | None = None  # "data": a user error; "interrupt": Ctrl-C; anything else: a bug
    message: str | None = None
    skip: bool = False
    echo: Any = None  # a stage that (wrongly) puts something secret-looking in its report
    overwrite: bool = False


@dataclass
class ToyReport(Report):
    made: str | None = None
    input: str | None = None
    skipped: bool = False
    echo: Any = None

    def summary_lines(self) -> list[str]:
        return [f"made {self.made}"]

    def record(self) -> dict:
        record = {"summary_lines": self.summary_lines(), "input": self.input}
        if self.skipped:
            record["skipped"] = True
        if self.echo:
            record["echo"] = self.echo
        return record


def run(args: ToyArguments) -> ToyReport:
    CALLS.append(dataclasses.asdict(args))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.fail == "data":
        from bortify.data import DataError

        raise DataError(f"toy data error: {args.message or 'no such file'}")
    if args.fail == "interrupt":
        raise KeyboardInterrupt
    if args.fail:
        raise RuntimeError("boom")
    (out / "made.json").write_text(json.dumps(dataclasses.asdict(args)))
    return ToyReport(made=str(out), input=args.input, skipped=args.skip, echo=args.echo)


def spec(name: str, **kw) -> StageSpec:
    return StageSpec(name, help="toy", description="a toy stage", arguments=("pipeline_toy_stage:ToyArguments",),
                     run="pipeline_toy_stage:run", **kw)
