"""Command line: run the whole pipeline in one process, without Airflow.

    python -m dialinsight_core run --ds 2026-11-25 [--run-id ID] [--max-dialogues N] [--source NAME ...]
        [--promote] [--summary FILE]

Uses the same config (``config/dialinsight.yaml`` + ``DIALINSIGHT__*`` env) and stage code as the
DAG; prints the publish summary as JSON. Useful for debugging a stage and for benchmarks.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from dialinsight_core.config import ConfigError, load_settings
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
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    run_id = args.run_id or f"cli__{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
    ctx = RunContext(settings, args.ds, run_id, {"max_dialogues": args.max_dialogues, "sources": args.source,
                                                  "promote": args.promote})
    try:
        result = run_all(ctx)
    except BatchGateFailed as exc:
        print(exc, file=sys.stderr)
        return 3
    except SourceError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    if args.summary:
        with open(args.summary, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
