"""What can go wrong, and the one line the command line prints for each.

- `PlcError`: a problem with the user's input (files, flags, data): exit status 2.
- What the operating system refuses (OSError and its kin: a full disk, a read-only folder, a
  missing permission, a folder where a file should be, a name too long) and running out of
  memory: exit status 2 too, one line naming the path and what to do (`refusal`).
- Training that diverged (a rate too high): exit status 3; where the command keeps a record of it
  (train-task's metric file), a plan counts the job as done (App. A's grid goes on).
- Anything else is a bug in plc: exit status 1, one line, the traceback in a file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator

EXIT_BUG = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3


class PlcError(Exception):
    """A problem with the user's input (files, flags, data), not a bug in plc."""


# What to do about each refusal; the OS's own words say what happened.
ADVICE = {
    errno.ENOSPC: "free space there or write elsewhere",
    errno.EDQUOT: "free space within your quota or write elsewhere",
    errno.EROFS: "write elsewhere",
    errno.EACCES: "check the permissions of it and of its folder, or write elsewhere",
    errno.EPERM: "check the permissions of it and of its folder, or write elsewhere",
    errno.EISDIR: "it is a folder: give a file's path",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENAMETOOLONG: "choose a shorter name",
    errno.ENOENT: "check the path",
    errno.EEXIST: "remove it or write elsewhere",
    errno.ENOTEMPTY: "remove it or write elsewhere",
    errno.EMFILE: "raise the limit of open files (ulimit -n)",
    errno.ENFILE: "close other programs or raise the system's limit of open files",
    errno.EIO: "the disk or network file system failed: check it, or write elsewhere",
    errno.ENOMEM: "use a smaller model or --micro-batch, or a machine with more memory",
}
# The temporary names plc writes under (store.atomic_path, a partial token store): the message
# names the file the user asked for.
OS_CODE = re.compile(r"\(os error (\d+)\)")  # how Rust (polars) words an OS error
TEMPORARY = re.compile(r"^\.(?:(?P<name>.+)\.[0-9a-f]{16}\.tmp|(?P<store>.+)\.partial)$")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then what caused it or was being handled when it was raised."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def os_error_of(exc: BaseException) -> OSError | None:
    """The OSError behind `exc` (torch's writer, for one, reports a full disk as a RuntimeError
    raised while the OSError is handled)."""
    return next((e for e in _chain(exc) if isinstance(e, OSError)), None)


def user_path(path: str | os.PathLike) -> str:
    """The path the user asked for, where `path` is (inside) plc's temporary name for it."""
    parts = os.fsdecode(path).split(os.sep)
    for i, part in enumerate(parts):
        if m := TEMPORARY.match(part):
            return os.sep.join([*parts[:i], m.group("name") or m.group("store")])
    return os.sep.join(parts)


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Name `path` in an OS error raised inside that names no file (a full disk, while a writer
    writes to an open file); one that a library reports as its own error with the OS's code in
    its message (polars: "… (os error 28)") becomes that OSError."""
    try:
        yield
    except Exception as e:
        err = os_error_of(e)
        if err is None and (code := _os_code(e)) is not None:
            raise OSError(code, os.strerror(code), os.fsdecode(path)) from e
        if err is not None and err.filename is None:
            err.filename = os.fsdecode(path)
        raise


def _os_code(exc: BaseException) -> int | None:
    """The OS error code a library's own exception names in its message (Rust's io::Error)."""
    for e in _chain(exc):
        if m := OS_CODE.search(str(e)):
            return int(m.group(1))
    return None


def refusal(exc: BaseException) -> str | None:
    """One line for what the system refused (an OSError behind `exc`, or memory), else None."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch's
        what = "GPU memory" if type(exc).__name__ == "OutOfMemoryError" else "memory"
        return f"out of {what}; {ADVICE[errno.ENOMEM]}"
    err = os_error_of(exc)
    if err is None:
        code = _os_code(exc)
        if code is None:
            return None
        err = OSError(code, os.strerror(code))
    reason = (err.strerror or str(err) or type(err).__name__).rstrip(".")
    name = errno.errorcode.get(err.errno or 0)
    reason = f"{reason[:1].lower()}{reason[1:]}" + (f" ({name})" if name else "")
    advice = ADVICE.get(err.errno or 0)
    # A rename names the temporary file first and the target second: the target is the one
    # that can be a folder or sit in a read-only one.
    path = err.filename2 if err.filename2 is not None else err.filename
    where = f"{user_path(path)}: " if path is not None else ""
    return f"{where}{reason}" + (f"; {advice}" if advice else "")
