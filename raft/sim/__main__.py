"""``python -m raft.sim --help``."""

from raft.sim.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
