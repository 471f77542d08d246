"""`python -m app` runs the same command line as `switchyard`."""

from app.cli.main import main

raise SystemExit(main())
