"""Optional dependencies. The base install is the client; serving needs the ``server``
extra. ``require`` imports a module of an extra, or raises an error that names the pip
package and the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from clipserve.errors import ClipServeError, ModelUnavailableError

SERVER = "server"


def missing(
    package: str,
    needed_for: str,
    *,
    extra: str = SERVER,
    error: type[ClipServeError] = ModelUnavailableError,
) -> ClipServeError:
    """``<needed_for> needs '<package>' (pip install 'clipserve[<extra>]')``."""
    return error(f"{needed_for} needs {package!r} (pip install 'clipserve[{extra}]')")


def require(
    module: str,
    *,
    needed_for: str,
    package: str | None = None,
    extra: str = SERVER,
    error: type[ClipServeError] = ModelUnavailableError,
) -> ModuleType:
    """Import ``module`` (installed by ``package``, default: the module's own name)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing(package or module, needed_for, extra=extra, error=error) from exc
