"""``clipserve serve`` with ``tests.engine.helpers.FaultyModel`` in place of the model it
would load: a pass holding ``<stuck>`` hangs, one holding ``<crash>`` kills its inference
thread. For the ``--exit-on-stuck`` tests: ``python -m tests.reliability.stuck_serve serve
--model hash ...`` (run from the repository root)."""

from __future__ import annotations

import sys

from clipserve import cli
from clipserve.server import app
from tests.engine.helpers import FaultyModel


def main() -> None:
    app.load_configured_model = lambda config, device=None: FaultyModel()  # type: ignore[assignment]
    raise SystemExit(cli.main(sys.argv[1:]))


if __name__ == "__main__":
    main()
