"""Small venvs holding only clipserve's client (the base install, then the docarray extra),
one per Python version, under ``.cache/client-envs/``. clipserve goes in as a wheel built
from this checkout once per session, so they test a real install, not the source tree.

The venvs are reused across runs; each session reinstalls the fresh wheel (quick: the
dependencies are already there) and removes docarray before the base-install checks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / ".cache" / "client-envs"
#: the oldest and newest Python clipserve supports; CI tests both. More (or others) with
#: CLIPSERVE_CLIENT_PYTHONS="3.10 3.11 3.12 3.13"
VERSIONS = tuple(os.environ.get("CLIPSERVE_CLIENT_PYTHONS", "3.10 3.13").split())
INSTALL_TIMEOUT_S = 900


def find_python(version: str) -> Path | None:
    """An interpreter for ``version``: pyenv's newest X.Y, else ``pythonX.Y`` on PATH (not
    a pyenv shim, which only works for the selected versions)."""
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = sorted(versions.glob(f"{version}.*"), key=lambda p: _release(p.name))
    for candidate in reversed(candidates):
        python = candidate / "bin" / "python"
        if python.is_file():
            return python
    found = shutil.which(f"python{version}")
    return Path(found) if found and "/shims/" not in found else None


def _release(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def build_wheel(out_dir: Path) -> Path:
    """clipserve's wheel from this checkout (no dependencies)."""
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out_dir), str(REPO)])
    return next(out_dir.glob("clipserve-*.whl"))


class ClientEnv:
    """A venv with clipserve's client for one Python version."""

    def __init__(self, version: str, python: Path) -> None:
        self.version = version
        self.base_python = python
        self.path = ROOT / f"py{version}"
        self.python = self.path / "bin" / "python"

    def create(self) -> None:
        if not self.python.is_file():
            if self.path.exists():
                shutil.rmtree(self.path)
            run([str(self.base_python), "-m", "venv", str(self.path)])

    def install_base(self, wheel: Path) -> None:
        """The wheel without extras, and no docarray left from an earlier run."""
        self.pip("install", "-q", "--force-reinstall", "--no-deps", str(wheel))
        self.pip("install", "-q", str(wheel))
        self.pip("uninstall", "-q", "-y", "docarray")

    def install_docarray_extra(self, wheel: Path) -> None:
        self.pip("install", "-q", f"{wheel}[docarray]")

    def pip(self, *args: str) -> None:
        run([str(self.python), "-m", "pip", "--disable-pip-version-check", *args])

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name


def run(command: list[str]) -> None:
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        output = done.stdout[-2000:] + done.stderr[-4000:]
        raise RuntimeError(f"{' '.join(command)} failed:\n{output}")
