"""Where results came from: the methods that made them (distribution, version), which distributions could load,
and what else the numbers depend on (uqbench's version and commit, torch, the device, the fold split). Shared
by runs and ``uqbench evaluate``."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import uqbench
from uqbench.devices import machine
from uqbench.records import from_json
from uqbench.registry import registry
from uqbench.results.summary import Provenance


def provenance(*, methods: dict[str, str], device: str, precision: str, seed: int, fold_of: dict[str, int]
               ) -> Provenance:
    """The provenance of results made with ``methods`` (kind -> spec) on ``device``."""
    import torch

    split = hashlib.sha256(json.dumps(sorted(fold_of.items())).encode()).hexdigest()
    where = machine(device)
    record = registry().provenance(methods) | {
        "uqbench": uqbench.__version__, "git_commit": process_commit(), "torch": torch.__version__,
        "device_name": where["cuda"] or where["cpu"], "precision": precision, "cpu_threads": torch.get_num_threads(),
        "fold_split": split, "seed": seed}
    made: Provenance = from_json(Provenance, record, "provenance")
    return made


@functools.cache
def process_commit() -> str | None:
    """The commit of the uqbench source tree this process runs, read once, when the process starts its first
    run or evaluation, so that a commit made while a sweep runs is not claimed by the cells it writes later."""
    return git_commit(Path(uqbench.__file__).resolve().parents[2])


def git_commit(root: Path) -> str | None:
    """The commit checked out in ``root`` when it is a git checkout or worktree (an editable install), else None.
    Read from git's files, as git itself resolves them: HEAD, then the ref it names, loose or in packed-refs (git gc
    packs them), in the worktree's own folder or the repository's common one."""
    git_dir = _git_dir(root)
    if git_dir is None:
        return None
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head or None  # detached HEAD: the commit itself
        return _ref(git_dir, head[5:])
    except (OSError, UnicodeDecodeError):
        return None


def _git_dir(root: Path) -> Path | None:
    dotgit = root / ".git"
    if dotgit.is_dir():
        return dotgit
    if dotgit.is_file():  # a worktree or submodule: "gitdir: <path>"
        text = dotgit.read_text().strip()
        if text.startswith("gitdir: "):
            path = Path(text[8:])
            return path if path.is_absolute() else (root / path).resolve()
    return None


def _ref(git_dir: Path, ref: str) -> str | None:
    common = git_dir
    if (git_dir / "commondir").is_file():
        common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
    for base in dict.fromkeys((git_dir, common)):
        loose = base / ref
        if loose.is_file():
            return loose.read_text().strip()
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            sha, _, name = line.partition(" ")
            if name == ref and not line.startswith(("#", "^")):
                return sha
    return None
