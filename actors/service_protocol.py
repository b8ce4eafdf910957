"""What every replicated service's servers and clerks agree on, whatever the service: the reply codes
of the clerk-facing RPC and the client side's identity, numbering and routing rules. Pure (no Ray, no
asyncio), so that the services' pure modules (``ops.py``) can import it.

A server answers a clerk's call with a pair ``(code, payload)``, or ``None`` when it is down:

- ``(OK, results)``: the batch was applied by this leader in its own term; one result per operation;
- ``(WRONG_LEADER, hint)``: not the leader (or deposed while waiting); ``hint`` is the peer id it
  believes leads, or ``None``;
- ``(TIMEOUT, None)``: the entry was not applied within the server's wait;
- ``(INVALID, reason)``: the call is malformed; it was checked before anything was proposed.

Only ``OK`` means the operations took effect; after any other answer they may still (the proposal may
yet commit), so clerks number their operations (client id, sequence number) and resending is safe.
"""

from __future__ import annotations

import random
from typing import Any

OK = "ok"
WRONG_LEADER = "wrong_leader"
TIMEOUT = "timeout"
#: ``("invalid", reason)``: the call is malformed; nothing was proposed
INVALID = "invalid"

#: what a clerk's call helper returns when a server did not answer within the attempt's wait
NO_ANSWER = "no answer"


def new_client_id() -> int:
    """A random 62-bit client id (collisions are as unlikely as for a UUID's random half)."""
    return random.SystemRandom().getrandbits(62)


def check_timeout(timeout: float | None) -> None:
    """Raise ``ValueError`` unless ``timeout`` is ``None`` (retry forever) or > 0."""
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be > 0 (or None to retry forever), got {timeout}")


def next_server(server: int, n: int, reply: Any) -> int:
    """The server (of ``n``) to try after ``server`` answered ``reply`` (anything but ``ok``): the
    leader it names, if that is another server in range, else the next one round the ring."""
    if isinstance(reply, tuple) and reply[0] == WRONG_LEADER:
        hint = reply[1]
        if isinstance(hint, int) and 0 <= hint < n and hint != server:
            return hint
    return (server + 1) % n


def outcome(reply: Any) -> str:
    """A short description of a failed attempt's reply, for error messages."""
    if reply is None:
        return "the call failed (dropped, cut off, or the server is down)"
    if reply[0] == WRONG_LEADER:
        return f"wrong leader (hint: {reply[1]})"
    if reply[0] == TIMEOUT:
        return "the server timed out waiting for the entry to commit"
    return str(reply[0])
