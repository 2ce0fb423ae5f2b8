"""Small shared helpers: atomic writes, output-directory guards."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class OutputExistsError(FileExistsError):
    pass


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_shareable(root: str | os.PathLike) -> None:
    """Give a folder assembled in a temp dir (mkdtemp: 0700, mkstemp files: 0600) the modes of ordinary files."""
    mask = _umask()
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, 0o777 & ~mask)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o666 & ~mask)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def check_output_dir(path: str | os.PathLike, overwrite: bool, *, resumable: bool = False, marker: str | None = None) -> Path:
    """Refuse to clobber a finished output unless `overwrite`.

    A directory that holds `marker` counts as a finished output. With `resumable`, an unfinished
    directory (no marker) is accepted so the stage can continue where it stopped.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"Output path {path} exists and is not a directory.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        finished = marker is None or (path / marker).exists()
        if finished or not resumable:
            raise OutputExistsError(
                f"Output directory {path} already holds results. Pass --overwrite to replace them"
                + (", or choose another --output_dir." if not resumable else "; an unfinished run there would resume.")
            )
    path.mkdir(parents=True, exist_ok=True)
    return path
