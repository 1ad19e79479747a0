"""Every file the harness writes goes through :func:`write_atomic`: a reader never sees half a file, and a
full disk or a read-only folder is an OSError naming the file that was being written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], object], *, part: str = ".part") -> None:
    """Call ``write(tmp)`` on a temporary name beside ``path`` (its name + ``part``, which keeps the extension a
    writer such as nibabel or numpy reads from the name), then rename it into place. A crash leaves the old file;
    an OSError (a full disk mid-write often carries no file name) is raised again naming ``path``."""
    tmp = path.with_name(path.name + part)
    try:
        write(tmp)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)  # frees the space a partial write took
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
