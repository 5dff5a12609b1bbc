"""``python -m worldrouter_async`` runs the command line."""

from .cli import main

raise SystemExit(main())
