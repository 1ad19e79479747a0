"""The one atomic writer every harness file goes through."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from uqbench.files import write_atomic


def test_a_failed_write_names_the_file_keeps_the_old_one_and_leaves_no_part(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("old")

    def full(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")  # as a full disk reports it: no file name

    with pytest.raises(OSError, match="No space left on device") as caught:
        write_atomic(path, full)
    assert caught.value.filename == str(path) and caught.value.errno == errno.ENOSPC
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_the_part_name_keeps_the_extension_a_writer_reads(tmp_path: Path) -> None:
    seen: list[str] = []
    write_atomic(tmp_path / "x.nii.gz", lambda tmp: seen.append(tmp.name) or tmp.write_text("v"), part=".part.nii.gz")
    assert seen == ["x.nii.gz.part.nii.gz"] and (tmp_path / "x.nii.gz").read_text() == "v"
