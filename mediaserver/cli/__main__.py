"""`python -m mediaserver.cli ...` is the `mediaserver` command."""

from mediaserver.cli.commands import main

raise SystemExit(main())
