"""``python -m raft.sim --help``."""

from raft.sim.cli import main

raise SystemExit(main())
