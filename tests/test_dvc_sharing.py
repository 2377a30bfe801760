"""Sharing a teacher cache across a lab through a local-directory DVC remote, end to end.

Clone A scores the teacher (the real ``teachclip teacher score`` on tiny inputs), pushes to the
remote and commits ``dvc.lock``; clone B (a ``git clone`` of A) pulls only that stage's output
and ``dvc repro`` must then *not* run the stage: the command appends to a counter file on every
run, so B's counter must stay absent, and the pulled cache file must keep its inode and mtime.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_teacher_stage import make_inputs

DVC_YAML = """\
stages:
  teacher_score:
    cmd: >-
      echo run >> score_runs.log &&
      {python} -m stages.cli teacher score --name tiny --model inputs/model
      --frames inputs/frames.h5 --manifest inputs/manifest --out teachers/tiny/cache
      --block-rows 4 --device cpu
    deps:
      - inputs/model
      - inputs/frames.h5
      - inputs/manifest
    outs:
      - teachers/tiny/cache
"""


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_pull_of_shared_teacher_cache_skips_scoring(tmp_path: Path) -> None:
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    repo_root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0",
           "PYTHONPATH": str(repo_root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    remote = tmp_path / "lab-remote"
    a, b = tmp_path / "alice", tmp_path / "bob"
    a.mkdir()

    def git(repo: Path, *args: str) -> str:
        return _run(["git", *args], repo, env)

    git(a, "init", "-q")
    git(a, "config", "user.email", "alice@example.org")
    git(a, "config", "user.name", "Alice")
    _run([dvc, "init", "-q"], a, env)
    _run([dvc, "remote", "add", "-d", "lab", str(remote)], a, env)
    make_inputs(a / "inputs")  # small: committed to git, so both clones have the deps
    (a / "dvc.yaml").write_text(DVC_YAML.format(python=sys.executable))
    (a / ".gitignore").write_text("score_runs.log\n")

    _run([dvc, "repro"], a, env)
    assert (a / "score_runs.log").read_text() == "run\n"
    assert (a / "teachers/tiny/cache/cache.h5").is_file()
    _run([dvc, "push"], a, env)
    assert remote.is_dir() and any(remote.rglob("*"))
    git(a, "add", "-A")
    git(a, "commit", "-q", "-m", "tiny teacher cache")
    tracked = git(a, "ls-files")
    assert "dvc.lock" in tracked and "cache.h5" not in tracked

    _run(["git", "clone", "-q", str(a), str(b)], tmp_path, env)
    git(b, "config", "user.email", "bob@example.org")
    git(b, "config", "user.name", "Bob")
    cache_b = b / "teachers/tiny/cache/cache.h5"
    assert not cache_b.exists()
    _run([dvc, "pull", "teacher_score"], b, env)
    assert cache_b.read_bytes() == (a / "teachers/tiny/cache/cache.h5").read_bytes()
    before = cache_b.stat()

    out = _run([dvc, "repro"], b, env)
    assert not (b / "score_runs.log").exists(), out  # the command never ran in B
    after = cache_b.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert "didn't change" in out or "up to date" in out.lower(), out
    status = _run([dvc, "status"], b, env)
    assert "up to date" in status.lower(), status
