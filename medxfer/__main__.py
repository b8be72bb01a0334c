"""``python -m medxfer`` runs the ``medxfer`` command."""

from medxfer.commands import main

raise SystemExit(main())
