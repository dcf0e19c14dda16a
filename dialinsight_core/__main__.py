"""Command line: run the whole pipeline in one process, without Airflow.

    python -m dialinsight_core run --ds 2026-11-25 [--run-id ID] [--max-dialogues N] [--source NAME ...]
        [--promote] [--summary FILE]
    python -m dialinsight_core snapshots            committed snapshots, and where latest.json points
    python -m dialinsight_core retain [--keep-last N] [--max-age-days D]   apply publishing.retention
    python -m dialinsight_core compact-cache        fold the request cache's chunks into its index

Uses the same config (``config/dialinsight.yaml`` + ``DIALINSIGHT__*`` env) and stage code as the
DAG; prints the publish summary as JSON. Useful for debugging a stage and for benchmarks.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from dialinsight_core.config import ConfigError, Settings, load_settings
from dialinsight_core.runs.nightly import BatchGateFailed, RunContext, SourceError, run_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dialinsight_core", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="ingest -> prompts -> label -> score -> gate -> publish")
    run.add_argument("--ds", default=datetime.now(UTC).strftime("%Y-%m-%d"))
    run.add_argument("--run-id", default=None)
    run.add_argument("--max-dialogues", type=int, default=0)
    run.add_argument("--source", action="append", default=[])
    run.add_argument("--promote", action="store_true",
                     help="move latest.json to this snapshot even with --max-dialogues/--source or an older --ds")
    run.add_argument("--summary", default=None, help="also write the JSON summary to this file")
    sub.add_parser("snapshots", help="committed snapshots and where latest.json points")
    retain = sub.add_parser("retain", help="delete snapshots publishing.retention does not keep (never latest)")
    retain.add_argument("--keep-last", type=int, default=None)
    retain.add_argument("--max-age-days", type=float, default=None)
    sub.add_parser("compact-cache", help="fold the request cache's checkpoint chunks into its bucketed index")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.cmd != "run":
        print(json.dumps(_maintenance(settings, args), indent=2, default=str))
        return 0
    run_id = args.run_id or f"cli__{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
    ctx = RunContext(settings, args.ds, run_id, {"max_dialogues": args.max_dialogues, "sources": args.source,
                                                  "promote": args.promote})
    try:
        result = run_all(ctx)
    except BatchGateFailed as exc:
        print(f"{exc}\nnext step: {exc.next_step}", file=sys.stderr)
        return 3
    except SourceError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    if args.summary:
        with open(args.summary, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0


def _maintenance(settings: Settings, args: argparse.Namespace) -> Any:
    from dialinsight_core import publishing  # lazy: `run` needs none of the maintenance commands' imports
    from dialinsight_core.inference.cache import RequestCache  # lazy: as above
    from dialinsight_core.storage import LATEST_KEY, store_from_settings  # lazy: as above

    store = store_from_settings(settings)
    if args.cmd == "snapshots":
        latest, _ = store.read_pointer(LATEST_KEY)
        return {"latest": latest, "committed": publishing.committed_snapshots(store)}
    if args.cmd == "retain":
        rule = settings.publishing.retention
        if args.keep_last is not None or args.max_age_days is not None:
            rule = rule.model_copy(update={"keep_last": args.keep_last, "max_age_days": args.max_age_days})
        return publishing.apply_retention(store, rule)
    lab = settings.labeling
    return {prefix: RequestCache(store, prefix, lab.cache_buckets, lab.cache_compact_chunks).compact()
            for prefix in (lab.cache_prefix, f"{lab.cache_prefix.rstrip('/')}/judge")}


if __name__ == "__main__":
    sys.exit(main())
