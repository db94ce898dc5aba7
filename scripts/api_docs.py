"""Builds the Python API reference from the docstrings with pdoc (HTML, one page per
module): ``python scripts/api_docs.py [OUT_DIR]`` (default ``build/api``; open
``index.html``). Exits 1 if pdoc warns (a name in ``__all__`` that does not resolve, a
module that does not import), so the reference cannot rot: a test runs it in CI.

The public surface documented: the client (``clipserve``, ``clipserve.client``, its
``Response``), the error tree, and what programs embedding the server use (``running_server``
and ``ClipServer``, ``ServerConfig``, ``Limits``, ``UriPolicy``, ``load_model``,
``EmbeddingModel``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

MODULES = [
    "clipserve",
    "clipserve.client",
    "clipserve.client.response",
    "clipserve.errors",
    "clipserve.server.app",
    "clipserve.server.config",
    "clipserve.server.limits",
    "clipserve.server.uri_fetch",
    "clipserve.models.registry",
    "clipserve.models.base",
]
#: a package named above would bring every submodule; only the listed ones are public
EXCLUDE = "!(?!(" + "|".join(m.replace(".", r"\.") for m in MODULES) + r")$)clipserve\..*"


def build(out_dir: Path) -> list[str]:
    """Write the reference into ``out_dir``; the warnings pdoc gave (empty when clean)."""
    import pdoc
    import pdoc.render

    import clipserve
    import clipserve.client

    _ = clipserve.Client, clipserve.client.Response  # resolve the lazy exports for pdoc
    pdoc.render.configure(
        docformat="restructuredtext",
        footer_text=f"clipserve {clipserve.__version__}",
        show_source=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*MODULES, EXCLUDE, output_directory=out_dir)
    return [str(w.message) for w in caught if "pdoc" in w.filename]


def main() -> int:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "build/api")
    problems = build(out_dir)
    for problem in problems:
        print(f"api_docs: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"API reference: {out_dir / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
