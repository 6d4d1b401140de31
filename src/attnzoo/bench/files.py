"""The one way results reach the disk: a complete file or none (temporary file, fsync, rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def replace_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` fills a uniquely named temporary file beside ``path`` (same suffix, so a writer
    such as matplotlib knows the format); once it is complete and on disk it replaces ``path``, so
    a reader sees the old file or the new one, never half of one (also with two writers at once)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would carry over to a report meant to be shared
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through ``replace_atomically``."""
    return replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline=""))
