"""`bortify pretrain`: its entry in the stage table (bortify/stages.py), run by bortify/pipeline.py."""

import sys


def main(argv: list[str] | None = None) -> int:
    from bortify.pipeline import run_command

    return run_command("pretrain", argv)


if __name__ == "__main__":
    sys.exit(main())
