"""Runs clipserve.js's own tests (``tests/js``) under Node's test runner, so CI runs them
with the rest. They start their own hash-model servers with this interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.web.conftest import REPO

pytestmark = pytest.mark.node


def test_clipserve_js_under_node_test(node: list[str]) -> None:
    env = {**os.environ, "CLIPSERVE_PYTHON": sys.executable}
    files = sorted(
        str(path.relative_to(REPO)) for path in (REPO / "tests" / "js").glob("*.test.mjs")
    )
    assert files, "no clipserve.js tests found"
    command = [*node, "--test", "--test-reporter=spec", *files]
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]
