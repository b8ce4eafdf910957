"""Sharded KV: replica groups that serve shards of the key space, follow the shard controller's
configurations one at a time, move shards between groups (pull, install, delete) and keep serving
every shard that is not moving. See the README section "Sharded KV (`shardkv/`)"."""
