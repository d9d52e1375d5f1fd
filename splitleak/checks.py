"""Limits and output-path checks every entry point applies before work starts (CLI, services, benchmarks).

An output folder or file that cannot be written is found here, in one line, rather than by a
traceback at the end of a run that already streamed or trained for minutes.
"""
from __future__ import annotations

import os
from pathlib import Path

from splitleak.errors import SplitleakError

# Operator limits on what a command line may ask for; the same bounds the cloud and the recordings enforce.
MAX_SIZE_PX = 1024  # pixels per side: a 100000 px frame would be 120 GB as float32
MAX_BATCH = 1024  # frames per batch
MAX_CLASSES = 100_000
MAX_THREADS = 1024
MAX_SEED = 2**63 - 1  # torch and numpy take any seed in 0..2^63-1


def check_output_dir(path: str | None, flag: str) -> None:
    """An output folder: an existing writable folder, or one that can be created under a writable folder."""
    if path is None:
        return
    target = Path(path)
    if _exists(target, flag) and not target.is_dir():
        raise SplitleakError(f"{flag} {path}: exists and is not a folder")
    _check_creatable(target, flag, path)


def check_output_file(path: str | None, flag: str) -> None:
    """An output file: writable if it exists (and not a folder), else creatable with its folders."""
    if path is None:
        return
    target = Path(path)
    if _exists(target, flag):
        if target.is_dir():
            raise SplitleakError(f"{flag} {path}: is a folder, expected a file name")
        if not os.access(target, os.W_OK):
            raise SplitleakError(f"{flag} {path}: the file is not writable")
        return
    _check_creatable(target.parent, flag, path)


def _check_creatable(folder: Path, flag: str, path: str) -> None:
    existing = next((p for p in (folder, *folder.parents) if _exists(p, flag)), Path("."))
    if not existing.is_dir():
        raise SplitleakError(f"{flag} {path}: {existing} is a file, so nothing can be created under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SplitleakError(f"{flag} {path}: the folder {existing} is not writable")


def _exists(path: Path, flag: str) -> bool:
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as err:
        raise SplitleakError(f"{flag}: cannot inspect {path}: {err.strerror}") from None
    return True
