"""The documentation cannot rot: the API reference builds from the docstrings without a
warning, and every flag of `clipserve serve` is described in docs/serving.md."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from clipserve.cli import build_parser

REPO = Path(__file__).resolve().parents[1]


def test_the_api_reference_builds_and_documents_the_client(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "scripts/api_docs.py", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    page = (tmp_path / "clipserve.html").read_text()
    for name in ("Client", "aencode", "Keyword arguments", "MissingDependencyError"):
        assert name in page, name
    for module in ("clipserve/errors.html", "clipserve/server/app.html",
                   "clipserve/models/registry.html", "clipserve/client/response.html"):  # fmt: skip
        assert (tmp_path / module).is_file(), module


def test_every_serve_flag_is_in_the_server_guide() -> None:
    guide = (REPO / "docs" / "serving.md").read_text()
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            serve = action.choices["serve"]
    flags = [o for a in serve._actions for o in a.option_strings if o.startswith("--")]
    missing = [flag for flag in flags if flag not in ("--help",) and f"`{flag}" not in guide]
    assert not missing, f"docs/serving.md does not describe {missing}"
