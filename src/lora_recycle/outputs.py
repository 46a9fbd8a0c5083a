"""Output directories written atomically: built in a hidden sibling and renamed into place only when complete.

Until the rename is done the directory holds an ``INCOMPLETE_MARKER`` file, which the adapter and model
readers refuse: a process killed while writing leaves a hidden ``.NAME.partial-PID`` sibling (or, killed
between rename and marker removal, NAME itself) with the marker. The next write of NAME removes or replaces
such leftovers without needing ``--overwrite``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lora_recycle.errors import UserError

INCOMPLETE_MARKER = ".lora-recycle-incomplete"


def check_out_dir(out: str | Path, overwrite: bool = False, flag: str = "--out") -> Path:
    """``out`` as an absolute path if it may be written: not a file, and empty or absent unless ``overwrite``."""
    path = Path(out).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {out}: is a file, not a directory")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{flag} {out}: {parent} is a file, not a directory")
            break
    if path.is_dir() and any(path.iterdir()) and not overwrite and incomplete_reason(path) is None:
        raise UserError(f"{flag} {out}: directory exists and is not empty (pass --overwrite to replace it)")
    if overwrite and path.is_dir() and Path.cwd().resolve().is_relative_to(path.resolve()):
        raise UserError(f"{flag} {out}: cannot replace the current directory or one of its parents")
    return path


def incomplete_reason(directory: str | Path) -> str | None:
    """Why ``directory`` is not a finished output (an interrupted atomic write), or None."""
    if (Path(directory) / INCOMPLETE_MARKER).exists():
        return "incomplete output of an interrupted lora-recycle run; delete it and run again"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_partials(path: Path) -> None:
    """Delete ``.NAME.partial-PID`` / ``.NAME.old-PID`` siblings left by writers that no longer run (killed ones)."""
    for stale in [*path.parent.glob(f".{path.name}.partial-*"), *path.parent.glob(f".{path.name}.old-*")]:
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)) and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def _replace(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``; an existing ``path`` is moved aside first and deleted after."""
    if path.is_dir() and any(path.iterdir()):
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.replace(path)  # replaces an empty directory atomically


@contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False, flag: str = "--out") -> Iterator[Path]:
    """Yield a temporary sibling directory to write into; on success it becomes ``out``, on failure it goes."""
    path = check_out_dir(out, overwrite, flag)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(path)
    tmp = path.parent / f".{path.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (tmp / INCOMPLETE_MARKER).write_text(f"being written into {path} by lora-recycle (pid {os.getpid()})\n")
    try:
        yield tmp
        check_out_dir(path, overwrite, flag)  # something may have appeared there while we worked
        _replace(tmp, path)  # the marker goes last, so no moment shows a finished-looking partial directory
        (path / INCOMPLETE_MARKER).unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
