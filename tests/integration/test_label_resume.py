"""kill -9 of a running labeling process, then a rerun: same records, none lost, none twice.

The CLI runs the pipeline in a subprocess against the test OpenAI server (slow replies, so the
kill lands mid-shard). The rerun resends only what the killed run had not checkpointed, and a
further rerun of the finished run sends no request at all (labels and judge verdicts cached).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pandas as pd

from dialinsight_core.runs.nightly import RunContext, run_all
from dialinsight_core.storage import store_from_settings
from tests.conftest import ROOT

DS, N = "2026-11-25", 16


def _env(store_dir, srv) -> dict[str, str]:
    return {"DIALINSIGHT__STORAGE__URI": f"file://{store_dir}", "DIALINSIGHT__ENGINE__KIND": "openai",
            "DIALINSIGHT__ENGINE__BASE_URL": srv.base_url, "DIALINSIGHT__ENGINE__MAX_CONCURRENCY": "2",
            "DIALINSIGHT__ENGINE__MAX_RETRIES": "0", "DIALINSIGHT__LABELING__SHARDS": "1",
            "DIALINSIGHT__LABELING__CHECKPOINT_EVERY": "4", "DIALINSIGHT__GATES__COLLAPSE__MIN_STDEV": "0"}


def _cli(env: dict[str, str], run_id: str) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if not k.startswith("DIALINSIGHT__")} | env
    return subprocess.Popen([sys.executable, "-m", "dialinsight_core", "run", "--ds", DS, "--run-id", run_id,
                             "--max-dialogues", str(N)], cwd=ROOT, env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _published(store, run_id: str) -> dict[str, pd.DataFrame]:
    snap = f"snapshots/ds={DS}/run={run_id}"
    return {part: pd.read_parquet(io.BytesIO(store.read_bytes(f"{snap}/{part}/part-00000.parquet")))
            for part in ("data", "rejected", "quarantined")}


def _label_chunks(store) -> list[str]:
    return [k for k in store.list("cache/label/") if k.endswith(".parquet") and "/judge/" not in k]


def test_killed_labeling_resumes_without_loss_or_duplicates(tmp_path, make_settings, fake_openai):
    srv = fake_openai(lambda body: "slow", slow_s=0.15)

    # reference: the same run, never interrupted, in its own store
    ref_env = _env(tmp_path / "ref", srv)
    ref_settings = make_settings(**ref_env)
    run_all(RunContext(ref_settings, DS, "manual__ref", {"max_dialogues": N, "sources": []}))
    ref = _published(store_from_settings(ref_settings), "manual__ref")
    prompts = sum(len(t) for t in ref.values())
    assert prompts > 16

    env = _env(tmp_path / "run", srv)
    store = store_from_settings(make_settings(**env))
    before = srv.requests_by_kind()["label"]
    proc = _cli(env, "manual__kill")
    deadline = time.monotonic() + 120
    while len(_label_chunks(store)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read()
    assert not store.exists(f"snapshots/ds={DS}/run=manual__kill/manifest.json")
    sent_before_kill = srv.requests_by_kind()["label"] - before
    checkpointed = sum(len(pd.read_parquet(io.BytesIO(store.read_bytes(k)))) for k in _label_chunks(store))
    assert 8 <= checkpointed < prompts  # >= two chunks of 4 survived; the rest was lost in flight
    assert sent_before_kill < prompts + 2  # killed mid-shard (at most the two in flight beyond)

    mid = srv.requests_by_kind()["label"]
    rerun = _cli(env, "manual__kill")
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out
    resent = srv.requests_by_kind()["label"] - mid
    assert resent == prompts - checkpointed  # only what the killed run had not checkpointed
    print(f"\nprompts={prompts} sent_before_kill={sent_before_kill} checkpointed={checkpointed} resent={resent}")

    got = _published(store, "manual__kill")
    for part, key in (("data", "prompt_id"), ("rejected", "prompt_id"), ("quarantined", "record_id")):
        assert not got[part][key].duplicated().any(), part
        assert sorted(got[part][key]) == sorted(ref[part][key]), part
    merged = got["data"].merge(ref["data"], on="prompt_id", suffixes=("", "_ref"))
    assert len(merged) == len(ref["data"]) and (merged.output_text == merged.output_text_ref).all()
    assert got["data"].cache_hit.any() and not got["data"].cache_hit.all()

    # a rerun of the finished run: nothing is sent, neither labels nor judge calls
    total = srv.total
    again = _cli(env, "manual__kill")
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    assert srv.total == total
    assert '"already_published": true' in out
