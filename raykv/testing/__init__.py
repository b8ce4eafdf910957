"""raykv.testing: the test harnesses, shipped as code (as hashicorp/raft ships ``testing.go``).

- :mod:`raykv.testing.ctrler_harness`: the shard controller's harness (the reference's
  ``shardctrler/config.go``) and the configuration checks of its tests.

The Raft and kvraft harnesses still live in ``actors/`` (``harness.py``, ``kv_harness.py``); issue 12
moves them here, so that ``actors/`` depends on nothing above it. Import the modules themselves:
this package imports nothing, so that importing it costs nothing.
"""
