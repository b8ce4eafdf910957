"""Time the linearizability checker on every shared history.

    python benchmarks/linearizability.py [--data DIR] [--repeat N] [--json FILE]

Checks every Jepsen log (one register per file) and every KV log both per key and as one whole,
unpartitioned history; verifies each verdict against the known one; prints the time of each
check (parsing included) and the totals.  Exit status 1 if any verdict is wrong.

The data folder defaults to ``<repo>/../shared/data/linearizability`` (or RAYKV_SHARED_DATA,
which may name the ``shared/data`` folder or the ``linearizability`` folder itself).
Reference (README of the data): porcupine, in Go, checks all of it in about 4 s on the 2-core
development machine, its slowest Jepsen log in 0.19 s, and c10-ok / c10-bad whole in ~2 s each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from linearizability import KVModel, RegisterModel, Verdict, check, parse_file  # noqa: E402


def default_data() -> Path:
    env = os.environ.get("RAYKV_SHARED_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    return root if (root / "jepsen").is_dir() else root / "linearizability"


def cases(data: Path) -> list[tuple[str, Path, str, bool, bool]]:
    """(label, path, format, partitioned, expected linearizable) for every history."""
    verdicts_file = data / "jepsen" / "verdicts.txt"
    if not verdicts_file.is_file():
        raise SystemExit(f"error: {verdicts_file} not found; pass --data or set RAYKV_SHARED_DATA")
    out = []
    for line in verdicts_file.read_text().splitlines():
        if line.strip():
            name, verdict = line.split()
            out.append((f"jepsen/{name}", data / "jepsen" / name, "jepsen", True, verdict == "true"))
    for path in sorted((data / "kv").glob("*.txt")):
        for partitioned in (True, False):
            label = f"kv/{path.name} {'per-key' if partitioned else 'whole'}"
            out.append((label, path, "kv", partitioned, path.stem.endswith("-ok")))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="the linearizability data folder")
    parser.add_argument("--repeat", type=int, default=1, help="runs per history; the best counts")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="write results")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    args = parser.parse_args(argv)
    data = args.data or default_data()
    models = {"jepsen": RegisterModel(), "kv": KVModel()}

    started = time.perf_counter()
    rows = []
    wrong = 0
    for label, path, fmt, partitioned, expected in cases(data):
        best = float("inf")
        for _ in range(max(args.repeat, 1)):
            t0 = time.perf_counter()
            history = parse_file(path, fmt)
            result = check(history, models[fmt], partitioned=partitioned)
            best = min(best, time.perf_counter() - t0)
        ok = result.verdict is (Verdict.LINEARIZABLE if expected else Verdict.NOT_LINEARIZABLE)
        wrong += not ok
        explored = sum(p.explored for p in result.partitions)
        rows.append(
            {
                "history": label,
                "seconds": best,
                "verdict": str(result.verdict),
                "correct": ok,
                "operations": len(history),
                "explored": explored,
            }
        )
        if not args.quiet:
            mark = "" if ok else "  WRONG VERDICT"
            print(
                f"{best:8.4f}s  {label:32} {result.verdict!s:17} {len(history):4} ops "
                f"{explored:8} configs{mark}",
                flush=True,
            )

    def total(prefix: str) -> float:
        return sum(r["seconds"] for r in rows if r["history"].startswith(prefix))

    jepsen = [r for r in rows if r["history"].startswith("jepsen/")]
    slowest = max(jepsen, key=lambda r: r["seconds"])
    summary = {
        "total_seconds": sum(r["seconds"] for r in rows),
        "jepsen_seconds": total("jepsen/"),
        "kv_per_key_seconds": sum(r["seconds"] for r in rows if r["history"].endswith("per-key")),
        "kv_whole_seconds": sum(r["seconds"] for r in rows if r["history"].endswith("whole")),
        "slowest_jepsen": {"history": slowest["history"], "seconds": slowest["seconds"]},
        "slowest": max(rows, key=lambda r: r["seconds"]),
        "wall_seconds_in_process": time.perf_counter() - started,
        "wrong_verdicts": wrong,
        "python": platform.python_version(),
    }
    print(
        f"total {summary['total_seconds']:.3f}s  (jepsen {summary['jepsen_seconds']:.3f}s, "
        f"kv per key {summary['kv_per_key_seconds']:.3f}s, kv whole "
        f"{summary['kv_whole_seconds']:.3f}s); slowest Jepsen {slowest['history']} "
        f"{slowest['seconds']:.3f}s; slowest overall {summary['slowest']['history']} "
        f"{summary['slowest']['seconds']:.3f}s; {wrong} wrong verdicts"
    )
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "histories": rows}, indent=2) + "\n")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
