"""Optional dependencies name the extra that installs them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clipserve.errors import ClipServeError, ModelUnavailableError
from clipserve.extras import require


def test_require_imports_an_installed_module() -> None:
    assert require("json", needed_for="nothing").dumps([1]) == "[1]"


def test_a_missing_module_names_its_package_and_the_extra() -> None:
    with pytest.raises(ModelUnavailableError) as info:
        require("no_such_module_xyz", needed_for="the built-in model", package="no-such-pkg")
    assert str(info.value) == (
        "the built-in model needs 'no-such-pkg' (pip install 'clipserve[server]')"
    )
    assert isinstance(info.value.__cause__, ImportError)
    with pytest.raises(ClipServeError, match=r"clipserve\[other\]"):
        require("no_such_module_xyz", needed_for="x", extra="other", error=ClipServeError)


def test_serve_on_a_client_only_install_says_what_to_install() -> None:
    """uvicorn made unimportable in a fresh interpreter stands in for a client-only install."""
    script = (
        "import sys; sys.modules['uvicorn'] = None\n"
        "from clipserve.cli import main\n"
        "raise SystemExit(main(['serve', '--model', 'hash', '--host', '127.0.0.1',"
        " '--grpc-port', '0', '--http-port', '0']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert "clipserve serve needs 'uvicorn' (pip install 'clipserve[server]')" in done.stderr
