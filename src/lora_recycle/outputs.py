"""Output directories written atomically: built in a hidden sibling and renamed into place only when complete.

Until the rename is done the directory holds an ``INCOMPLETE_MARKER`` file, which the adapter and model
readers refuse: a process killed while writing leaves a hidden ``.NAME.partial-PID`` sibling (or, killed
between rename and marker removal, NAME itself) with the marker. The next write of NAME removes or replaces
such leftovers without needing ``--overwrite``. Running out of space, or a folder that cannot be written, is a
one-line ``UserError`` naming the output, and nothing of it is left behind.
"""

from __future__ import annotations

import errno
import os
import re
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
    """Why ``directory`` is not a finished output (it or a folder above it is an interrupted atomic write), or None.

    The folders above count too: ``experts/00`` inside a killed Arrow library is no adapter either.
    """
    path = Path(directory).absolute()
    if any((folder / INCOMPLETE_MARKER).exists() for folder in (path, *path.parents)):
        return "incomplete output of an interrupted lora-recycle run; delete it and run again"
    return None


DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})  # no space, quota, file-size limit


def os_error_code(exc: BaseException) -> int | None:
    """The errno of an OSError, or of a library error that only quotes it (safetensors: ``(os error 28)``)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    found = re.search(r"\(os error (\d+)\)", str(exc))
    return int(found.group(1)) if found else None


def _size_text(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            break
        n /= 1000
    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def disk_full_error(what: str, path: Path, reason: str, written: int | None,
                    outcome: str = "nothing was left behind") -> UserError:
    """``what: out of disk space (reason): it needs more than N (written when it failed), M free there; outcome``."""
    folder = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    needs = f"it needs more than {_size_text(written)} (written when it failed), " if written is not None else ""
    return UserError(f"{what}: out of disk space ({reason}): {needs}{_size_text(shutil.disk_usage(folder).free)} "
                     f"free there; {outcome}")


def _write_error(flag: str, out: str | Path, path: Path, tmp: Path, exc: BaseException) -> UserError | None:
    """The one-line error for a failed write of an output (a full disk, a folder we may not write), or None."""
    code = os_error_code(exc)
    if code in DISK_FULL:
        return disk_full_error(f"{flag} {out}", path, os.strerror(code), _tree_bytes(tmp) if tmp.is_dir() else 0)
    where = getattr(exc, "filename", None)
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) and where is not None and _is_output(Path(where), path, tmp):
        return UserError(f"{flag} {out}: cannot write {where}: {os.strerror(code)}")
    return None


def _is_output(failed: Path, path: Path, tmp: Path) -> bool:
    """True if a failed file operation was on the output: a folder above it, its partial copy, or itself."""
    failed = failed.absolute()
    return path.is_relative_to(failed) or failed.is_relative_to(tmp) or failed.is_relative_to(path)


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
    tmp = path.parent / f".{path.name}.partial-{os.getpid()}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(path)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        (tmp / INCOMPLETE_MARKER).write_text(f"being written into {path} by lora-recycle (pid {os.getpid()})\n")
        yield tmp
        check_out_dir(path, overwrite, flag)  # something may have appeared there while we worked
        _replace(tmp, path)  # the marker goes last, so no moment shows a finished-looking partial directory
        (path / INCOMPLETE_MARKER).unlink()
    except BaseException as exc:
        error = _write_error(flag, out, path, tmp, exc) if isinstance(exc, Exception) else None
        shutil.rmtree(tmp, ignore_errors=True)
        if error is not None:
            raise error from None
        raise


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write a small text file whole or not at all: a uniquely named sibling, then ``os.replace``."""
    import uuid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    scratch.write_text(text, encoding="utf-8")
    os.replace(scratch, path)
