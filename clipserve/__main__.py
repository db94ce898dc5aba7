"""``python -m clipserve`` runs the ``clipserve`` command line."""

from clipserve.cli import main

raise SystemExit(main())
