"""`python -m bot`: the same command line as `infoguard`."""

from bot.cli import main

raise SystemExit(main())
