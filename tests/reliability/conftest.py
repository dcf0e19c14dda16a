"""Fixtures of the fault-injection suite: a small pipeline over the bundled sample with the test
OpenAI server, and the ledger that turns each scenario's figures into the table of
docs/reliability.md (written to build/reliability.md and printed at the end of the session)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dialinsight_core.config import load_settings
from dialinsight_core.runs import nightly
from dialinsight_core.runs.context import RunContext
from tests.support.faults import run_stage_process
from tests.support.ledger import audit, latest_state, uncommitted_visible

ROOT = Path(__file__).resolve().parents[2]
ROWS: list[dict[str, Any]] = []
COLUMNS = ["scenario", "injected", "records in", "accepted", "rejected", "quarantined (dialogues / prompts)", "lost",
           "duplicated", "requests resent", "latest.json"]


def resent(srv: Any) -> int:
    """Requests the server answered more than once (the same payload): answers paid for twice.
    Retries of attempts that failed (429, 5xx, unreadable) are not resends of an answered request."""
    return sum(n - 1 for n in srv.answered.values() if n > 1)


class Pipeline:
    """The nightly's stages in order, in this process (as ``dag.test()`` / the CLI run them), any of
    them optionally in its own process killed with SIGKILL at a chosen write."""

    def __init__(self, env: dict[str, str], ds: str, run_id: str, params: dict[str, Any] | None = None):
        self.env, self.ds, self.run_id, self.params = env, ds, run_id, params or {}
        self.ctx = RunContext(load_settings(environ=env), ds, run_id, self.params)
        self.outs: dict[str, Any] = {}

    def inputs(self, stage: str) -> dict[str, Any]:
        o = self.outs
        return {"ingest": o.get("ingest"), "prompts": o.get("prompts"), "labels": o.get("labels"),
                "score": o.get("score"), "gate": o.get("gate")}

    def run_stage(self, stage: str, shard: dict[str, Any] | None = None) -> Any:
        i, ctx = self.inputs(stage), self.ctx
        if stage == "ingest":
            return nightly.run_ingest(ctx)
        if stage == "prompts":
            return nightly.run_build_prompts(ctx, i["ingest"])
        if stage == "label":
            return nightly.run_label_shard(ctx, shard)
        if stage == "score":
            return nightly.run_score(ctx, i["ingest"], i["prompts"], i["labels"])
        if stage == "gate":
            return nightly.run_gate(ctx, i["score"], i["ingest"])
        nightly.check_conservation(i["ingest"], i["prompts"], i["labels"], i["score"], i["gate"])
        return nightly.run_publish(ctx, i["ingest"], i["prompts"], i["labels"], i["score"], i["gate"])

    def killed(self, stage: str, kill_at: tuple[str, int, bool], workdir: Path, shard: dict[str, Any] | None = None
               ) -> str:
        """Run ``stage`` in a process killed at ``kill_at``; returns its stderr. Asserts it died by SIGKILL."""
        inputs = {**self.inputs(stage), "shard": shard}
        rc, _, err = run_stage_process(stage, {k: v for k, v in self.env.items()}, self.ds, self.run_id, inputs,
                                       kill_at, workdir, self.params)
        assert rc == -9, f"{stage} was not killed (exit {rc}):\n{err[-3000:]}"
        return err

    def all(self, after_stage: Any = None) -> dict[str, Any]:
        """Every stage in order; ``after_stage(name)`` is called before each (a fault hook)."""
        for stage in ("ingest", "prompts", "label", "score", "gate", "publish"):
            if after_stage:
                after_stage(stage)
            if stage == "label":
                self.outs["labels"] = [self.run_stage("label", s) for s in self.outs["prompts"]["shards"]]
            else:
                self.outs[stage] = self.run_stage(stage)
        return self.outs


def suite_env(store: Path, srv: Any, **extra: str) -> dict[str, str]:
    """The suite's settings (as DIALINSIGHT__ env): a file store at ``store``, the test server."""
    env = {"DIALINSIGHT__STORAGE__URI": f"file://{store}",
           "DIALINSIGHT__ENGINE__KIND": "openai", "DIALINSIGHT__ENGINE__BASE_URL": srv.base_url,
           "DIALINSIGHT__ENGINE__MAX_RETRIES": "0", "DIALINSIGHT__ENGINE__BACKOFF_S": "0.01",
           "DIALINSIGHT__INGEST__MAX_DIALOGUES": "10", "DIALINSIGHT__LABELING__CHECKPOINT_EVERY": "4",
           "DIALINSIGHT__LABELING__SHARDS": "2",
           # every scenario relabels the same sample: dedup against other dates' snapshots would
           # leave later runs empty (dedup itself is tested in tests/unit/test_dedup.py)
           "DIALINSIGHT__INGEST__DEDUP_AGAINST_PUBLISHED": "false",
           "DIALINSIGHT__GATES__DATA_DOCS": "false"}
    env.update(extra)
    return env


@pytest.fixture
def pipeline_env(tmp_path: Path):
    def make(srv: Any, **extra: str) -> dict[str, str]:
        return suite_env(tmp_path / "store", srv, **extra)
    return make


@pytest.fixture
def record():
    """``record(scenario, injected, pipeline, srv, latest_expect)``: audit the run by id, check it,
    and add its row to the reliability table."""

    def add(scenario: str, injected: str, pipe: Pipeline, resent_n: int, latest_note: str = "",
            expect_latest: str | None = "self") -> dict[str, Any]:
        row = audit(pipe.ctx)
        assert row["lost"] == 0 and row["duplicated"] == 0, row["problems"]
        assert not row["problems"], row["problems"]
        assert uncommitted_visible(pipe.ctx.store) == []
        state = latest_state(pipe.ctx.store)
        assert state["complete"] is not False, state
        if expect_latest == "self":
            assert state["snapshot_id"] == pipe.ctx.paths.snapshot_id, state
        elif expect_latest is not None:
            assert state["snapshot_id"] == expect_latest, state
        latest = f"{state['snapshot_id']} (complete, gate-passed)" if state["complete"] else "none yet"
        ROWS.append({"scenario": scenario, "injected": injected, "records in": row["records_in"],
                     "accepted": row["accepted"], "rejected": row["rejected"],
                     "quarantined (dialogues / prompts)": f"{row['quarantined_dialogues']} / {row['quarantined_prompts']}",
                     "lost": row["lost"], "duplicated": row["duplicated"], "requests resent": resent_n,
                     "latest.json": latest + (f"; {latest_note}" if latest_note else "")})
        return row
    return add


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not ROWS:
        return
    out = ROOT / "build" / "reliability.md"
    out.parent.mkdir(exist_ok=True)
    lines = ["| " + " | ".join(COLUMNS) + " |", "| " + " | ".join("---" for _ in COLUMNS) + " |"]
    lines += ["| " + " | ".join(str(r[c]).replace("|", "\\|") for c in COLUMNS) + " |" for r in ROWS]
    totals = Counter()
    for r in ROWS:
        totals["lost"] += r["lost"]
        totals["duplicated"] += r["duplicated"]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (ROOT / "build" / "reliability.json").write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter:
        reporter.write_line(f"\nreliability table ({len(ROWS)} scenarios, lost {totals['lost']}, duplicated "
                            f"{totals['duplicated']}): {out}")
        for line in lines:
            reporter.write_line(line)
