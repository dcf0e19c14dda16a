"""One stage runner in its own process, as an Airflow task runs it; optionally killed with SIGKILL
at the n-th object-store write matching a pattern (tests/support/faults.py).

    python -m tests.support.stage_proc SPEC.json

SPEC: stage, ds, run_id, params, inputs (the earlier stages' outputs, as their XComs), kill_at
([pattern, n, after] or null), out (where the stage's output JSON goes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from dialinsight_core.config import load_settings
from dialinsight_core.runs import nightly
from dialinsight_core.runs.context import RunContext
from tests.support.faults import kill_self, on_write


def run(spec: dict[str, Any]) -> Any:
    ctx = RunContext(load_settings(), spec["ds"], spec["run_id"], spec["params"])
    i = spec["inputs"]
    stage = spec["stage"]
    if stage == "ingest":
        return nightly.run_ingest(ctx)
    if stage == "prompts":
        return nightly.run_build_prompts(ctx, i["ingest"])
    if stage == "label":
        return nightly.run_label_shard(ctx, i["shard"])
    if stage == "score":
        return nightly.run_score(ctx, i["ingest"], i["prompts"], i["labels"])
    if stage == "gate":
        return nightly.run_gate(ctx, i["score"], i["ingest"])
    if stage == "publish":
        return nightly.run_publish(ctx, i["ingest"], i["prompts"], i["labels"], i["score"], i["gate"])
    raise ValueError(stage)


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    if spec["kill_at"]:
        pattern, nth, after = spec["kill_at"]
        with on_write(pattern, nth, kill_self, after=after):
            out = run(spec)
    else:
        out = run(spec)
    Path(spec["out"]).write_text(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
