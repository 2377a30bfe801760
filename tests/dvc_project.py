"""A throwaway DVC project made of the repository's real dvc.yaml and code, for pipeline tests.

Why a copy: ``dvc repro`` writes ``data/``, ``dvc.lock`` and ``.dvc/`` state, which must not touch
the checkout; the copy holds the real dvc.yaml, the real ``pipeline/`` and ``stages/`` (the code
deps) and a params.yaml the test chooses. ``teachclip`` on PATH is the installed package, i.e.
this checkout, so the copy runs exactly the code it hashes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def dvc_env() -> dict[str, str]:
    """Environment for subprocesses: the venv's bin first, quiet DVC, one thread per torch."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run(cmd: list[str], cwd: Path, *, timeout: int = 900) -> str:
    """Run a command, fail the test with its output when it fails."""
    proc = subprocess.run(cmd, cwd=cwd, env=dvc_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr


def make_project(root: Path, params_text: str, *, user: str = "alice") -> Path:
    """git + dvc project at ``root`` with the real dvc.yaml and code and the given params."""
    root.mkdir(parents=True)
    shutil.copy2(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copy2(REPO / ".gitignore", root / ".gitignore")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("pipeline", "stages"):
        shutil.copytree(REPO / folder, root / folder, ignore=ignore)
    (root / "params.yaml").write_text(params_text, encoding="utf-8")
    run(["git", "init", "-q"], root)
    run(["git", "config", "user.email", f"{user}@example.org"], root)
    run(["git", "config", "user.name", user], root)
    run(["dvc", "init", "-q"], root)
    shutil.copy2(REPO / ".dvcignore", root / ".dvcignore")  # the project's, over dvc's default
    return root


def stages_run(output: str) -> list[str]:
    """Names of the stages a ``dvc repro`` output says it ran."""
    return [line.split("'")[1] for line in output.splitlines()
            if line.startswith("Running stage '")]
