"""``python -m medxfer`` runs the ``medxfer`` command."""

from medxfer.cli import main

raise SystemExit(main())
