"""The fault-injection suite (issue 15): each scenario injects a fault a nightly meets in
production, through the platform's own code paths, then checks by record id that nothing was
lost or duplicated across any hand-off, that no half-written snapshot is visible to a reader,
that ``latest.json`` points at a complete, gate-passed snapshot, and how many requests were sent
twice. Each scenario adds its row to docs/reliability.md's table (build/reliability.md)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dialinsight_core.inference.cache import RequestCache
from dialinsight_core.storage import LATEST_KEY
from tests.reliability.conftest import ROOT, Pipeline, resent, suite_env
from tests.support.fake_openai import FakeOpenAIServer, planted
from tests.support.faults import DISK_FULL, PERMISSION_DENIED, S3FaultProxy, on_write

DS = "2026-11-25"
MIX = planted(0.15, "repeat")  # a realistic reply mix: some answers are rejected (repetition loops)

# (stage, the write that kills it: key pattern, n-th match, after the write?) - each in the middle
KILLS = {
    "ingest": ("/ingest/(turns|dialogues)\\.parquet$", 1, True),
    "label": ("cache/label/chunks/", 2, True),
    "score": ("/score/scored\\.parquet$", 1, False),
    "gate": ("/gate/(accepted|rejected)\\.parquet$", 1, True),
    "publish": ("/exports/", 1, False),
    "publish (after commit)": ("snapshots/latest\\.json", 1, False),
}


def _durable(store, prefix: str) -> int:
    cache = RequestCache(store, prefix)
    return sum(store.read_table(k).num_rows for k in cache._chunks())


@pytest.fixture(scope="module")
def base_store(tmp_path_factory) -> Path:
    """A store whose latest.json points at a complete earlier snapshot (built once, copied per test)."""
    root = tmp_path_factory.mktemp("base") / "store"
    with FakeOpenAIServer(MIX) as srv:
        Pipeline(suite_env(root, srv), "2026-11-24", "scheduled__base").all()
    return root


@pytest.mark.parametrize("what", list(KILLS))
def test_kill_9_in_the_middle_of_each_stage_then_rerun(what, fake_openai, pipeline_env, record, tmp_path, base_store):
    srv = fake_openai(MIX)
    env = pipeline_env(srv)
    shutil.copytree(base_store, tmp_path / "store")
    base = Pipeline(env, "2026-11-24", "scheduled__base")  # its complete snapshot is latest
    pipe = Pipeline(env, DS, f"scheduled__kill_{what.split()[0]}")
    stage = what.split()[0]
    store = pipe.ctx.store
    srv.answered.clear()
    sent_before = durable = 0

    def fault(name: str) -> None:
        nonlocal sent_before, durable
        if name != stage:
            return
        shard = pipe.outs["prompts"]["shards"][0] if stage == "label" else None
        total0 = sum(srv.answered.values())
        pipe.killed(stage, KILLS[what], tmp_path, shard)
        # the kill left no committed snapshot of this run, and latest.json on the earlier complete one
        if what != "publish (after commit)":
            assert not store.exists(f"{pipe.ctx.paths.snapshot}/manifest.json")
        assert store.read_pointer(LATEST_KEY)[0]["snapshot_id"] == base.ctx.paths.snapshot_id
        if stage == "label":
            sent_before = sum(srv.answered.values()) - total0
            durable = _durable(store, pipe.ctx.settings.labeling.cache_prefix) - base_cached

    base_cached = _durable(store, pipe.ctx.settings.labeling.cache_prefix)
    pipe.all(fault)
    n_resent = resent(srv)
    if stage == "label":  # only what was answered but not yet checkpointed when it died goes out again
        assert n_resent == sent_before - durable and durable > 0
    else:
        assert n_resent == 0
    when = "after" if KILLS[what][2] else "before"
    record(f"kill -9: {what}", f"SIGKILL {when} write #{KILLS[what][1]} of `{KILLS[what][0]}`, then rerun",
           pipe, n_resent, "committed before the kill; the rerun moved latest.json" if what.endswith("(after commit)")
           else f"stayed on {base.ctx.paths.snapshot_id} until the rerun committed")


def test_llm_server_killed_mid_shard_then_restarted(fake_openai, pipeline_env, record):
    srv = FakeOpenAIServer(MIX).__enter__()
    # any failed request fails the task (however many were in flight when the server went away)
    env = pipeline_env(srv, DIALINSIGHT__LABELING__MAX_FAILURE_RATE="0.0", DIALINSIGHT__LABELING__SHARDS="1",
                       DIALINSIGHT__ENGINE__MAX_CONCURRENCY="2")
    pipe = Pipeline(env, DS, "scheduled__server_down")
    pipe.outs["ingest"] = pipe.run_stage("ingest")
    pipe.outs["prompts"] = pipe.run_stage("prompts")
    shard = pipe.outs["prompts"]["shards"][0]
    answered = threading.Event()

    def plan(body):  # the server goes away after answering 6 requests
        if srv.total >= 6:
            answered.set()
            threading.Thread(target=lambda: (srv.httpd.shutdown(), srv.httpd.server_close()), daemon=True).start()
        return MIX(body)

    srv.plan = plan
    with pytest.raises(Exception, match="requests failed"):
        pipe.run_stage("label", shard)  # connection errors > max_failure_rate: the task fails (Airflow retries it)
    assert answered.is_set()
    first = srv.answered.copy()
    srv2 = FakeOpenAIServer(MIX, port=srv.port).__enter__()  # restarted on the same address
    try:
        pipe.outs["labels"] = [pipe.run_stage("label", shard)]
        for stage in ("score", "gate", "publish"):
            pipe.outs[stage] = pipe.run_stage(stage)
        twice = len(set(srv2.answered) & set(first))
        # every request the first server answered was checkpointed before the task failed: none is resent
        assert twice == 0
        record("LLM server killed mid-shard, restarted", "server stopped after 6 answers; label task fails, retried "
               "against the restarted server", pipe, twice)
    finally:
        srv2.__exit__(None, None, None)


def test_llm_server_answering_garbage_and_429_storms(fake_openai, pipeline_env, record):
    rnd = random.Random(7)

    def plan(body):  # a storm: a third of first attempts get 429, a fifth an unreadable body; retries succeed
        r = rnd.random()
        return "flaky_body" if r < 0.2 else ("error429" if r < 0.5 else MIX(body))

    srv = fake_openai(plan)
    env = pipeline_env(srv, DIALINSIGHT__ENGINE__MAX_RETRIES="6", DIALINSIGHT__ENGINE__BACKOFF_MAX_S="0.05",
                       DIALINSIGHT__GATES__COLLAPSE__MIN_STDEV="0")  # a retried "flaky" reply is always good
    pipe = Pipeline(env, DS, "scheduled__storm")
    pipe.all()
    faults = srv.requests["error429"] + srv.requests["flaky_body"]
    assert faults > 10
    q = sum(o["stats"]["quarantined"] for o in pipe.outs["labels"])
    record("LLM server: 429 storm + garbage bodies", f"{srv.requests['error429']} × HTTP 429, "
           f"{srv.requests['flaky_body']} × unreadable 200 bodies (retried with backoff; {q} quarantined)", pipe,
           resent(srv))


def _s3_env(pipeline_env, srv, bucket: str, endpoint: str) -> dict[str, str]:
    return pipeline_env(srv, DIALINSIGHT__STORAGE__URI=f"s3://{bucket}/dialinsight",
                        DIALINSIGHT__STORAGE__S3_ENDPOINT_URL=endpoint)


def test_object_store_503_slowdown_and_connection_resets(fake_openai, pipeline_env, record, moto_s3, s3_bucket,
                                                         monkeypatch):
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "5")

    def plan(method, path, n):  # every 7th request a 503 SlowDown, every 11th write reset half-way
        if method == "PUT" and n % 11 == 0:
            return "reset"
        return "503" if n % 7 == 0 else "forward"

    srv = fake_openai(MIX)
    with S3FaultProxy(moto_s3, plan) as proxy:
        pipe = Pipeline(_s3_env(pipeline_env, srv, s3_bucket, proxy.url), DS, "scheduled__s3_faults")
        pipe.all()
        assert proxy.injected.get("503", 0) > 10 and proxy.injected.get("reset", 0) > 2
        record("object store: 503 SlowDown + connection resets", f"{proxy.injected['503']} × 503, "
               f"{proxy.injected['reset']} × connection reset mid-PUT (S3 protocol server behind a fault proxy)",
               pipe, resent(srv))


def test_object_store_down_then_back(fake_openai, pipeline_env, record, moto_s3, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    down = {"on": False}
    srv = fake_openai(MIX)
    with S3FaultProxy(moto_s3, lambda m, p, n: "down" if down["on"] else "forward") as proxy:
        pipe = Pipeline(_s3_env(pipeline_env, srv, s3_bucket, proxy.url), DS, "scheduled__s3_down")

        def fault(stage: str) -> None:
            if stage == "score":
                down["on"] = True
                with pytest.raises(Exception, match=r"(?i)connection|endpoint|closed"):
                    pipe.run_stage("score")  # the task fails with the store's error; Airflow retries it
                down["on"] = False

        pipe.all(fault)
        record("object store down during score", f"every request dropped ({proxy.injected['down']}) while score "
               "ran; the task failed and its retry ran after the store was back", pipe, resent(srv))


@pytest.mark.parametrize("fault,stage,pattern", [(DISK_FULL, "score", "/score/"),
                                                 (PERMISSION_DENIED, "publish", "/data/part-")],
                         ids=["disk full (ENOSPC) in score", "permission denied (EACCES) in publish"])
def test_disk_full_and_permission_denied(fault, stage, pattern, fake_openai, pipeline_env, record):
    srv = fake_openai(MIX)
    pipe = Pipeline(pipeline_env(srv), DS, f"scheduled__oserror_{stage}")

    def inject(name: str) -> None:
        if name == stage:
            with on_write(pattern, 1, fault), pytest.raises(OSError, match="injected"):
                pipe.run_stage(stage)
            assert pipe.ctx.store.read_pointer(LATEST_KEY)[0] is None  # nothing half-published

    pipe.all(inject)
    record(f"file store: {'disk full' if fault is DISK_FULL else 'permission denied'} in {stage}",
           f"OSError({'ENOSPC' if fault is DISK_FULL else 'EACCES'}) at the first write of `{pattern}`, then rerun",
           pipe, resent(srv))


def _cli(env: dict[str, str], ds: str, run_id: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dialinsight_core", "run", "--ds", ds, "--run-id", run_id, *extra],
                            env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_two_runs_of_one_date_at_once_then_an_older_date_and_a_tiny_manual_run(fake_openai, pipeline_env, record):
    srv = fake_openai(MIX)
    env = pipeline_env(srv)
    procs = [_cli(env, DS, run_id) for run_id in ("scheduled__a", "manual__b")]  # the same date, at once
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    a, b = Pipeline(env, DS, "scheduled__a"), Pipeline(env, DS, "manual__b")
    store = a.ctx.store
    winner = store.read_pointer(LATEST_KEY)[0]["snapshot_id"]
    assert winner in (a.ctx.paths.snapshot_id, b.ctx.paths.snapshot_id)
    both = resent(srv)  # two runs started together share no answer yet: each pays for the same requests
    for pipe in (a, b):
        record("two runs of one date at once", "two CLI runs of the same logical date started together", pipe,
               both, "one of the two (the later commit)", expect_latest=winner)
    older = Pipeline(env, "2026-11-20", "manual__older")  # an older date rerun after a newer one
    assert older.all()["publish"]["latest"]["moved"] is False
    assert store.read_pointer(LATEST_KEY)[0]["snapshot_id"] == winner
    record("an older date rerun after a newer one", "a run of 2026-11-20 after 2026-11-25", older, resent(srv) - both,
           "did not move back (forward-only)", expect_latest=winner)
    tiny = Pipeline(env, DS, "manual__tiny", {"max_dialogues": 3})  # issue 15: a test trigger replaced the dataset
    out = tiny.all()["publish"]["latest"]
    assert out["moved"] is False and "promote" in out["why"]
    record("a tiny manual run (max_dialogues=3)", "a run with an override param", tiny, resent(srv) - both,
           "not moved (override run, not promoted)", expect_latest=winner)
    assert resent(srv) == both  # the later runs found every answer the first two paid for


N_HOSTILE = 10_000


def _hostile_lines(n: int, seed: int = 15) -> list[bytes]:
    rnd = random.Random(seed)
    zh = "您好我想租两室一厅预算五千元经纪人客户电话１３９８７６５４３２１"
    shapes = [
        lambda i: b"\x00\xff" * rnd.randint(1, 40),
        lambda i: json.dumps({"id": i, "turns": "not a list"}).encode(),
        lambda i: json.dumps({"id": None, "turns": []}).encode(),
        lambda i: json.dumps({"id": f"x{i}", "turns": [{"role": "bot", "text": zh}]}, ensure_ascii=False).encode(),
        lambda i: json.dumps({"id": f"y{i}", "turns": [{"role": "customer", "text": ""}]}).encode(),
        lambda i: ('{"id": "cut' + str(i) + '", "turns": [{"role": "customer", "text": "' + zh).encode(),
        lambda i: json.dumps([1, 2, 3]).encode(),
        lambda i: json.dumps({"id": f"z{i}", "turns": [{"role": "customer", "text": "房" * 9000}]},
                             ensure_ascii=False).encode(),
        lambda i: json.dumps({"id": f"u{i}", "turns": [{"role": "customer", "text": zh}]}, ensure_ascii=False)
        .encode("utf-16"),
        lambda i: json.dumps({"id": f"w{i}", "turns": [{"role": "agent", "text": 12345}, None]}).encode(),
    ]
    return [rnd.choice(shapes)(i) for i in range(n)]


_PLACES = ["Elm Street", "the river", "Oak Avenue", "the station", "Maple Court", "the old mill", "Hill Road",
           "the harbour", "Cedar Lane", "the market square", "Pine Terrace", "the university"]
_ASKS = ["Does it allow pets?", "Is parking included?", "How far is the nearest school?", "Is the kitchen new?",
         "Can I move in before the first of the month?", "Are utilities part of the rent?", "Is there a lift?",
         "How noisy is the street at night?", "Is the deposit refundable?", "Can I sublet a room?"]


def _valid(i: int) -> bytes:
    """A well-formed dialogue, each one distinct (no near-duplicates among them)."""
    rnd = random.Random(1000 + i)
    place, asks = rnd.choice(_PLACES), rnd.sample(_ASKS, 3)
    turns = [("customer", f"Hello, my name is on file as client {i}; I want a {rnd.randint(1, 4)} bedroom flat near {place}, "
                          f"budget {rnd.randint(9, 40) * 100} a month."),
             ("agent", f"We have a {rnd.randint(45, 140)} square metre flat near {place} on floor {rnd.randint(1, 20)}, "
                       f"{rnd.randint(9, 40) * 100} a month, free from {rnd.choice(['May', 'June', 'July', 'August'])}."),
             ("customer", " ".join(asks)),
             ("agent", f"{rnd.choice(['Yes', 'Mostly', 'It depends'])}: the landlord answered all three in the listing; "
                       f"I can book a viewing on {rnd.choice(['Monday', 'Wednesday', 'Friday', 'Saturday'])}."),
             ("customer", f"{rnd.choice(['Great', 'Fine', 'Perfect'])}, {rnd.randint(9, 17)} o'clock works for me.")]
    return json.dumps({"id": f"ok{i}", "turns": [{"role": r, "text": t} for r, t in turns]}).encode()


def test_thousands_of_hostile_inputs_in_one_run(fake_openai, pipeline_env, record, tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    lines = _hostile_lines(N_HOSTILE) + [_valid(i) for i in range(10)]
    random.Random(3).shuffle(lines)
    (folder / "export.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    srv = fake_openai(MIX)
    sources = [{"name": "crm", "adapter": "jsonl", "uri": str(folder), "roles": {"customer": "customer", "agent": "agent"}}]
    env = pipeline_env(srv, DIALINSIGHT__INGEST__MAX_DIALOGUES="0", DIALINSIGHT__SOURCES=json.dumps(sources))
    pipe = Pipeline(env, DS, "scheduled__hostile")
    pipe.outs["ingest"] = pipe.run_stage("ingest")
    st = pipe.outs["ingest"]["stats"]
    assert st["quarantined"] >= N_HOSTILE - 10 and st["files_read"] == st["dialogues_kept"] + st["quarantined"]
    q = pipe.ctx.store.read_table(pipe.outs["ingest"]["keys"]["quarantined"])
    assert all(q.column("reason_code").to_pylist()) and all(d is not None for d in q.column("reason_detail").to_pylist())
    for stage in ("prompts",):
        pipe.outs[stage] = pipe.run_stage(stage)
    pipe.outs["labels"] = [pipe.run_stage("label", s) for s in pipe.outs["prompts"]["shards"]]
    for stage in ("score", "gate", "publish"):
        pipe.outs[stage] = pipe.run_stage(stage)
    reasons = st["quarantined_by_reason"]
    record(f"{N_HOSTILE:,} malformed and hostile inputs", f"one JSONL file of {N_HOSTILE:,} fuzzed records (binary, wrong types, "
           "cut JSON, UTF-16, unknown roles, 9,000-char turns) and 10 well-formed ones; reasons: "
           + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:5]), pipe, resent(srv))


def test_another_shard_count_resends_nothing(fake_openai, pipeline_env, record):
    """Issue 15's "done when": changing labeling.shards between two runs of the same prompts resends nothing."""
    srv = fake_openai(MIX)
    Pipeline(pipeline_env(srv, DIALINSIGHT__LABELING__SHARDS="2"), DS, "scheduled__shards2").all()
    sent = srv.total
    pipe = Pipeline(pipeline_env(srv, DIALINSIGHT__LABELING__SHARDS="3"), DS, "manual__shards3")
    pipe.all()
    assert len(pipe.outs["prompts"]["shards"]) == 3
    assert srv.total == sent and sum(o["stats"]["requests_sent"] for o in pipe.outs["labels"]) == 0
    assert sum(o["stats"]["cache_hits"] for o in pipe.outs["labels"]) == pipe.outs["prompts"]["stats"]["prompts"]
    record("labeling.shards 2 → 3 between two runs", "the same prompts cut into 3 shards instead of 2", pipe,
           resent(srv), "the later run of the date")


@pytest.mark.timeout(600)
def test_dag_test_disk_full_in_publish_then_the_run_is_rerun(airflow_db, fake_openai, pipeline_env, record, monkeypatch):
    """The same fault through the real DAG (``dag.test()``): publish hits ENOSPC half-way (data written,
    no manifest), the run fails with nothing visible; the date's rerun publishes the complete snapshot."""
    from datetime import UTC, datetime

    from tests.support.dags import load_dag

    srv = fake_openai(MIX)
    env = pipeline_env(srv, DIALINSIGHT__AIRFLOW__RETRIES="0")  # dag.test() honours retries: fail fast
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    logical = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    with on_write("/rejected/part-", 1, DISK_FULL):
        failed = load_dag().test(logical_date=logical)
    assert failed.state == "failed"
    tis = {ti.task_id: ti.state for ti in failed.get_task_instances() if ti.map_index < 0}
    assert tis["publish"] == "failed" and tis["gate"] == "success"
    pipe = Pipeline(env, DS, failed.run_id)
    store = pipe.ctx.store
    assert store.exists(f"{pipe.ctx.paths.snapshot}/data/part-00000.parquet")  # half-written ...
    assert not store.exists(f"{pipe.ctx.paths.snapshot}/manifest.json") and store.read_pointer(LATEST_KEY)[0] is None
    answered = sum(srv.answered.values())
    rerun = load_dag().test(logical_date=logical)
    assert rerun.state == "success"
    again = Pipeline(env, DS, rerun.run_id)
    record("dag.test(): disk full in publish, then the date is rerun",
           "OSError(ENOSPC) at the write of `rejected/` in the DAG's publish task (data/ already written); "
           "the run failed, a new run of the date followed", again, resent(srv),
           f"none while the failed run's folder was half-written; then the rerun's ({sum(srv.answered.values()) - answered} "
           "requests sent: labels and verdicts from the cache)")
    assert sum(srv.answered.values()) == answered  # the rerun paid for nothing


def test_a_connection_reset_in_the_middle_of_a_multipart_write(moto_s3, s3_bucket, monkeypatch):
    """A 12 MiB object goes up in 5 MiB parts; the line drops half-way through part 2 (retried on
    its own) and then through every attempt of a later object's part 2 (the upload is aborted and
    nothing appears: no partial object, no dangling upload)."""
    from dialinsight_core.storage import S3ObjectStore

    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    mode = {"fail": "once", "seen": 0}

    def plan(method, path, n):
        if method == "PUT" and "partNumber=2" in path:
            mode["seen"] += 1
            if mode["fail"] == "always" or mode["seen"] == 1:
                return "reset"
        return "forward"

    data = random.Random(1).randbytes(12 << 20)
    with S3FaultProxy(moto_s3, plan) as proxy:
        store = S3ObjectStore(s3_bucket, "mp", proxy.url, "us-east-1", multipart_mib=5)
        store.write_bytes("big/part-00000.parquet", data)
        assert proxy.injected["reset"] == 1 and store.read_bytes("big/part-00000.parquet") == data
        mode.update(fail="always", seen=0)
        with pytest.raises(Exception):  # noqa: B017 - boto3 wraps the reset in its transfer error
            store.write_bytes("big/part-00001.parquet", data)
        assert not store.exists("big/part-00001.parquet")
        uploads = store.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
        assert not [u for u in uploads if u["Key"].endswith("part-00001.parquet")]
