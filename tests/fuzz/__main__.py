"""``python -m tests.fuzz --seconds N``: fuzz the decode path for N seconds and keep what it finds.

Other uses:
  ``--replay``             replay every kept crasher (``crashers/*.json``) and say which still fail
  ``--batch SEED:INDEX``   rebuild and run one batch of an earlier run (its seed and index are in its report)
  ``--refresh-corpus``     take the seed events again from the running stack's topics
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tests.fuzz.runner import CRASHERS, Finding, Worker, build_batch, load_crasher, run_campaign, save_crasher
from tests.fuzz.targets import load_seeds


def _report(finding: Finding, save_to: Path | None) -> None:
    batch = finding.batch
    where = f"seed {batch.seed} batch {batch.index}"
    mutations = sorted({m for r in batch.records for m in r.mutations})
    print(
        f"FOUND {finding.verdict.kind} in {batch.target} ({batch.fmt}), {where}: "
        f"{len(batch.records)} of {finding.original_size} records, mutations {mutations}",
        flush=True,
    )
    print("  " + finding.verdict.detail.strip().replace("\n", "\n  ")[-1500:], flush=True)
    if save_to is not None:
        print(f"  saved as {save_crasher(finding, save_to)}", flush=True)


def _replay(directory: Path) -> int:
    failing = 0
    worker = Worker()
    try:
        for path in sorted(directory.glob("*.json")):
            verdict = worker.replay(load_crasher(path))
            failing += not verdict.ok
            print(f"{'ok  ' if verdict.ok else 'FAIL'} {path.name} {verdict.kind} {verdict.detail.strip()[-300:]}")
    finally:
        worker.close()
    return 1 if failing else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=300.0, help="how long to fuzz (default 300)")
    parser.add_argument("--seed", type=int, default=None, help="the run's seed (default: the clock)")
    parser.add_argument("--jobs", type=int, default=2, help="decoding child processes (default 2)")
    parser.add_argument("--max-findings", type=int, default=10, help="stop after this many findings")
    parser.add_argument("--crashers", type=Path, default=CRASHERS, help="where findings are saved")
    parser.add_argument("--no-save", action="store_true", help="report findings without saving them")
    parser.add_argument("--avoid", action="append", default=[], help="leave out this mutation (repeatable)")
    parser.add_argument(
        "--differential", action="store_true", help="JSON: the native reader must agree with Arrow's reader alone"
    )
    parser.add_argument("--replay", action="store_true", help="replay the kept crashers")
    parser.add_argument("--batch", help="run one batch, given as SEED:INDEX")
    parser.add_argument("--refresh-corpus", action="store_true", help="take seed events from the running stack")
    args = parser.parse_args(argv)

    if args.refresh_corpus:
        from tests.fuzz.corpus_builder import refresh

        refresh()
        return 0
    if args.replay:
        return _replay(args.crashers)
    save_to = None if args.no_save else args.crashers
    if args.batch:
        seed, index = (int(part) for part in args.batch.split(":"))
        worker = Worker()
        try:
            verdict = worker.run(build_batch(seed, index, load_seeds()))
        finally:
            worker.close()
        print(f"{verdict.kind} in {verdict.seconds:.2f} s {dict(verdict.outcomes)}\n{verdict.detail}")
        return 0 if verdict.ok else 1

    seed = args.seed if args.seed is not None else time.time_ns() % 10**9
    print(f"fuzzing the decode path for {args.seconds:.0f} s with seed {seed} and {args.jobs} processes", flush=True)
    campaign = run_campaign(
        seed,
        args.seconds,
        args.jobs,
        on_finding=lambda finding: _report(finding, save_to),
        max_findings=args.max_findings,
        avoid=frozenset(args.avoid),
        differential=args.differential,
    )
    print(campaign.summary())
    return 1 if campaign.findings else 0


if __name__ == "__main__":
    sys.exit(main())
