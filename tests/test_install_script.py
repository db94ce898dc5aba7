"""scripts/install.sh, run on a copy of the repository whose .venv holds a stand-in python
that records the pip commands it is given: it installs once, does nothing while the venv
is current (so scripts/serve.sh starts at once), installs again when pyproject.toml or the
torch choice changes, and passes the torch index or wheel the user chose to pip."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORDER = """#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../calls.log"
"""
ACTIVATE = 'export PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd):$PATH"\n'


def copy_of_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "install.sh", repo / "scripts" / "install.sh")
    shutil.copy(REPO / "pyproject.toml", repo / "pyproject.toml")
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(RECORDER)
    (bin_dir / "python").chmod(0o755)
    (bin_dir / "activate").write_text(ACTIVATE)
    return repo


def install(repo: Path, **env: str) -> list[str]:
    """Run the script; the pip commands it ran this time."""
    log = repo / ".venv" / "calls.log"
    log.unlink(missing_ok=True)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSERVE_")}
    environment.update(env)
    done = subprocess.run(["bash", "scripts/install.sh"], cwd=repo, env=environment,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return log.read_text().splitlines() if log.exists() else []


def test_installs_once_then_only_when_something_changed(tmp_path) -> None:
    repo = copy_of_repo(tmp_path)
    first = install(repo)
    assert first[-2:] == ["-m pip install -q torch==2.13.0",
                          "-m pip install -q -e .[server,docarray,test,docs]"]  # fmt: skip
    assert install(repo) == []  # current: nothing to do
    assert install(repo, CLIPSERVE_REINSTALL="1") == first
    with open(repo / "pyproject.toml", "a") as pyproject:
        pyproject.write("\n# a change\n")
    assert install(repo) == first
    assert install(repo) == []


def test_the_torch_choice_reaches_pip(tmp_path) -> None:
    repo = copy_of_repo(tmp_path)
    index = "https://example.invalid/whl/cpu"
    calls = install(repo, CLIPSERVE_TORCH_INDEX=index)
    assert f"-m pip install -q --index-url {index} torch==2.13.0" in calls
    assert install(repo, CLIPSERVE_TORCH_INDEX=index) == []
    wheel = "/wheels/torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl"
    assert f"-m pip install -q {wheel}" in install(repo, CLIPSERVE_TORCH=wheel)
