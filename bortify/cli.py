"""`bortify <command>`: each command is a thin shell over a library function (see each module's `main`)."""

from __future__ import annotations

import importlib
import sys

# command -> (module with main(argv) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "extract": ("bortify.extraction.cli", "Pick a small BERT architecture out of a big one (Bort FPTAS); writes config.json + report."),
    "pretrain": ("bortify.pretraining.cli", "Pretrain a student by knowledge distillation (logit or representation KD) with the Trainer."),
    "finetune": ("bortify.finetuning.cli", "Fine-tune a student on a classification task, plain or with Agora."),
    "card": ("bortify.hub.card", "Render a model card with measured evidence from a run's reports."),
    "push": ("bortify.hub.push", "Push a checkpoint with its card to the Hugging Face Hub."),
    "run": ("bortify.pipeline", "Run a whole recipe: extract -> pretrain -> finetune -> card -> push, resumable."),
    "resources": ("bortify.resources", "List or fetch the embedded defaults (packaged models and data)."),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: bortify <command> [options]   (bortify <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from bortify import __version__

        print(f"bortify {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"bortify: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        # Every stage writes its outputs atomically and records a stage only once it is finished, so what
        # was finished is kept and the same command resumes (or redoes the interrupted step).
        print(f"\nbortify {name}: interrupted. Finished outputs were kept; re-run the same command to resume.",
              file=sys.stderr, flush=True)
        return 130
    except _user_errors() as exc:  # a command that let a user error through (e.g. from --config parsing)
        from bortify.utils import redact_secrets

        print(f"bortify {name}: error: {redact_secrets(str(exc))}", file=sys.stderr)
        return 2


def _user_errors() -> tuple[type[BaseException], ...]:
    from bortify.utils import user_error_types

    return user_error_types()


if __name__ == "__main__":
    sys.exit(main())
