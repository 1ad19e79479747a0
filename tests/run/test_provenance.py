"""The git commit an entry names is read as git resolves it: loose refs, packed refs (after git gc), worktrees."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from uqbench.run.provenance import git_commit

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    (root / "f.txt").write_text("x")
    _git(root, "add", "f.txt")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "one")
    return root


def test_a_loose_ref_gives_the_commit(repo: Path) -> None:
    assert git_commit(repo) == _git(repo, "rev-parse", "HEAD")


def test_packed_refs_give_the_commit(repo: Path) -> None:
    _git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert git_commit(repo) == _git(repo, "rev-parse", "HEAD")


def test_a_worktree_gives_its_own_checkout(repo: Path, tmp_path: Path) -> None:
    _git(repo, "pack-refs", "--all")
    tree = tmp_path / "tree"
    _git(repo, "worktree", "add", "-q", "-b", "other", str(tree))
    (tree / "g.txt").write_text("y")
    _git(tree, "add", "g.txt")
    _git(tree, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "two")
    assert git_commit(tree) == _git(tree, "rev-parse", "HEAD") != git_commit(repo)


def test_a_detached_head_gives_the_commit_and_no_checkout_gives_none(repo: Path, tmp_path: Path) -> None:
    _git(repo, "checkout", "-q", "--detach")
    assert git_commit(repo) == _git(repo, "rev-parse", "HEAD")
    assert git_commit(tmp_path / "nowhere") is None
