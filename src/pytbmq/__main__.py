"""`python -m pytbmq`: the same as the `pytbmq` command."""

from pytbmq.cli import main

raise SystemExit(main())
