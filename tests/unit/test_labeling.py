"""Request cache, chunked checkpoints and prefix-aware order of the label stage (test OpenAI server)."""

from __future__ import annotations

import json

import pytest

from dialinsight_core.inference import CachedEngine, LabelRequest, label_prompts
from dialinsight_core.inference.cache import RequestCache
from dialinsight_core.inference.labeling import order_requests
from dialinsight_core.inference.openai_engine import OpenAIEngine
from dialinsight_core.ingest import ingest
from dialinsight_core.instructions import load_library, load_output_schemas
from dialinsight_core.prompts import build_prompts
from dialinsight_core.runs.nightly import RunContext, TooManyFailures, run_label_shard
from dialinsight_core.storage import store_from_settings
from tests.support.fake_openai import is_judge


def _settings(make_settings, srv, **env):
    return make_settings(DIALINSIGHT__ENGINE__KIND="openai", DIALINSIGHT__ENGINE__BASE_URL=srv.base_url,
                         DIALINSIGHT__ENGINE__MAX_RETRIES="0", DIALINSIGHT__ENGINE__BACKOFF_S="0.01", **env)


def _prompts(s, n_dialogues=8):
    ing = ingest(s, max_dialogues=n_dialogues)
    return build_prompts(ing.dialogues, ing.turns, load_library(s), load_output_schemas(s), s, "2026-11-25").prompts


class Counting:
    """Factory that records whether (and how often) the engine was built."""

    def __init__(self, s):
        self.s, self.calls = s, 0

    def __call__(self):
        self.calls += 1
        return OpenAIEngine(self.s.engine)


def test_rerun_sends_nothing_and_marks_cache_hits(make_settings, fake_openai):
    srv = fake_openai()
    s = _settings(make_settings, srv, DIALINSIGHT__LABELING__CHECKPOINT_EVERY="5")
    store, prompts, schemas = store_from_settings(s), _prompts(s), load_output_schemas(s)
    first = label_prompts(prompts, Counting(s), schemas, s, store)
    sent = srv.total
    assert sent == prompts.num_rows == first.stats["requests_sent"] and first.stats["cache_hits"] == 0
    assert first.stats["checkpoint_chunks_written"] == -(-sent // 5)  # ceil: one chunk per 5 results
    assert not any(first.labels.column("cache_hit").to_pylist())

    factory = Counting(s)
    again = label_prompts(prompts, factory, schemas, s, store)
    assert srv.total == sent and factory.calls == 0  # zero requests, and no engine was even built
    assert again.stats["cache_hits"] == prompts.num_rows and again.stats["requests_sent"] == 0
    assert all(again.labels.column("cache_hit").to_pylist())
    cols = ["prompt_id", "output_text", "output_json", "model", "engine", "finish_reason", "completion_tokens"]
    assert again.labels.select(cols).equals(first.labels.select(cols))


def test_the_key_covers_model_sampling_and_schema(make_settings, fake_openai):
    srv = fake_openai()
    s = _settings(make_settings, srv)
    store, prompts, schemas = store_from_settings(s), _prompts(s, 4), load_output_schemas(s)
    label_prompts(prompts, Counting(s), schemas, s, store)
    n = srv.total
    hotter = _settings(make_settings, srv, DIALINSIGHT__ENGINE__TEMPERATURE="0.7")
    assert label_prompts(prompts, Counting(hotter), schemas, hotter, store).stats["requests_sent"] == n
    other_model = _settings(make_settings, srv, DIALINSIGHT__ENGINE__SERVED_MODEL_NAME="other")
    assert label_prompts(prompts, Counting(other_model), schemas, other_model, store).stats["requests_sent"] == n
    loose = {k: {**v, "title": "changed"} for k, v in schemas.items()}
    assert label_prompts(prompts, Counting(s), loose, s, store).stats["requests_sent"] == n
    assert label_prompts(prompts, Counting(s), schemas, s, store).stats["requests_sent"] == 0
    revised = _settings(make_settings, srv, DIALINSIGHT__ENGINE__MODEL_REVISION="abc123")  # new weights, same name
    assert label_prompts(prompts, Counting(revised), schemas, revised, store).stats["requests_sent"] == n


def test_the_cache_finds_an_answer_whichever_shard_or_run_it_lands_in(make_settings, fake_openai):
    """Issue 15: lookups went through the shard's fingerprint, so changing labeling.shards or
    max_dialogues resent every request. The cache is content-addressed per request now."""
    srv = fake_openai()
    s = _settings(make_settings, srv, DIALINSIGHT__LABELING__CHECKPOINT_EVERY="3")
    store, prompts, schemas = store_from_settings(s), _prompts(s, 8), load_output_schemas(s)
    half = prompts.num_rows // 2
    label_prompts(prompts.slice(0, half), Counting(s), schemas, s, store)  # "shard 0 of 2"
    label_prompts(prompts.slice(half), Counting(s), schemas, s, store)  # "shard 1 of 2"
    sent = srv.total
    assert sent == prompts.num_rows
    thirds = [prompts.slice(i, 5) for i in range(0, prompts.num_rows, 5)]  # another shard count
    outs = [label_prompts(t, Counting(s), schemas, s, store) for t in thirds]
    assert srv.total == sent and sum(o.stats["cache_hits"] for o in outs) == prompts.num_rows
    bigger = _prompts(s, 9)  # one more dialogue (max_dialogues changed): only its prompts go out
    new = set(bigger.column("prompt_id").to_pylist()) - set(prompts.column("prompt_id").to_pylist())
    out = label_prompts(bigger, Counting(s), schemas, s, store)
    assert out.stats["requests_sent"] == len(new) == srv.total - sent


def test_compaction_bounds_the_files_a_lookup_opens(make_settings, fake_openai):
    srv = fake_openai()
    s = _settings(make_settings, srv, DIALINSIGHT__LABELING__CHECKPOINT_EVERY="1",
                  DIALINSIGHT__LABELING__CACHE_COMPACT_CHUNKS="1000")
    store, prompts, schemas = store_from_settings(s), _prompts(s, 6), load_output_schemas(s)
    first = label_prompts(prompts, Counting(s), schemas, s, store)
    cache = RequestCache(store, s.labeling.cache_prefix, s.labeling.cache_buckets)
    chunks = [k for k in store.list(cache.prefix + "/chunks/")]
    assert len(chunks) == prompts.num_rows  # one chunk per result before compaction
    out = cache.compact()
    assert out["compacted"] and out["chunks"] == len(chunks) and not store.list(cache.prefix + "/chunks/")
    assert len(store.list(cache.prefix + "/segments/")) <= s.labeling.cache_buckets
    again = label_prompts(prompts.slice(0, 3), Counting(s), schemas, s, store)
    assert again.stats["requests_sent"] == 0 and again.stats["cache_files_read"] <= 3  # its keys' buckets only
    cols = ["prompt_id", "output_text"]
    assert again.labels.select(cols).equals(first.labels.slice(0, 3).select(cols))
    assert cache.compact()["compacted"]  # nothing new: a no-op that keeps every row
    assert label_prompts(prompts, Counting(s), schemas, s, store).stats["requests_sent"] == 0


def test_a_lookup_during_compaction_sees_every_row(make_settings, fake_openai):
    srv = fake_openai()
    s = _settings(make_settings, srv, DIALINSIGHT__LABELING__CHECKPOINT_EVERY="2",
                  DIALINSIGHT__LABELING__CACHE_COMPACT_CHUNKS="1000")
    store, prompts, schemas = store_from_settings(s), _prompts(s, 4), load_output_schemas(s)
    label_prompts(prompts, Counting(s), schemas, s, store)
    cache = RequestCache(store, s.labeling.cache_prefix)
    listed = cache._chunks()
    original = cache._chunks
    calls = []

    def racing_chunks():  # the compactor runs between the reader's two listings
        calls.append(1)
        if len(calls) == 1:
            RequestCache(store, s.labeling.cache_prefix).compact()
            return listed  # stale: these chunks are gone now
        return original()

    cache._chunks = racing_chunks
    from dialinsight_core.inference.fingerprint import model_fingerprint
    from dialinsight_core.llm import LabelRequest as _R
    from dialinsight_core.llm import request_key, sampling_dict

    keys = [request_key(model_fingerprint(s), _R(r["prompt_id"], json.loads(r["messages"]),
                                                 schemas[r["output_schema_id"]]), sampling_dict(s.engine))
            for r in prompts.to_pylist()]
    assert len(cache.lookup(keys)) == len(set(keys)) and len(calls) == 2


def test_transient_failures_are_resent_deterministic_ones_are_not(make_settings, fake_openai):
    def plan(body):
        h = sum(map(ord, json.dumps(body["messages"]))) % 6
        return {0: "error500", 1: "context_too_long"}.get(h, "good")

    srv = fake_openai(plan)
    s = _settings(make_settings, srv)
    store, prompts, schemas = store_from_settings(s), _prompts(s), load_output_schemas(s)
    first = label_prompts(prompts, Counting(s), schemas, s, store)
    reasons = first.stats["quarantined_by_reason"]
    assert reasons["http_500"] > 0 and reasons["context_too_long"] > 0
    assert first.stats["prompts_in"] == first.stats["labeled"] + first.stats["quarantined"]
    before = srv.total
    again = label_prompts(prompts, Counting(s), schemas, s, store)
    assert srv.total - before == reasons["http_500"]  # only the 5xx ones went out again
    assert again.stats["quarantined_by_reason"] == reasons  # the server still fails them the same way
    cached_q = [r for r in again.quarantined.to_pylist() if r["reason_code"] == "context_too_long"]
    assert cached_q and all(r["reason_detail"].startswith("(cached)") for r in cached_q)


def test_a_torn_chunk_is_skipped_and_its_requests_resent(make_settings, fake_openai):
    srv = fake_openai()
    s = _settings(make_settings, srv, DIALINSIGHT__LABELING__CHECKPOINT_EVERY="4")
    store, prompts, schemas = store_from_settings(s), _prompts(s, 4), load_output_schemas(s)
    first = label_prompts(prompts, Counting(s), schemas, s, store)
    prefix = first.stats["cache_prefix"]
    chunks = sorted(k for k in store.list(prefix + "/chunks/") if k.endswith(".parquet"))
    store.write_bytes(chunks[0], b"PAR1 torn write")  # what a crash in the middle of a write could leave
    before = srv.total
    again = label_prompts(prompts, Counting(s), schemas, s, store)
    assert again.stats["cache_unreadable_chunks"] == 1
    assert srv.total - before == again.stats["requests_sent"] == 4
    assert again.labels.num_rows == first.labels.num_rows and again.stats["cache_hits"] == prompts.num_rows - 4


def test_identical_payloads_in_a_shard_are_sent_once(make_settings, fake_openai):
    srv = fake_openai()
    s = _settings(make_settings, srv)
    schema = {"type": "object", "properties": {"reply": {"type": "string"}}, "required": ["reply"]}
    msgs = [{"role": "user", "content": "Dialogue:\nCustomer: a flat\nInstruction: reply"}]
    eng = CachedEngine(OpenAIEngine(s.engine), s.engine, None, "cache/label")
    out = eng.generate([LabelRequest("a", msgs, schema), LabelRequest("b", msgs, schema)])
    assert [r.prompt_id for r in out] == ["a", "b"] and out[0].output_text == out[1].output_text
    assert srv.total == 1


def test_prefix_order_groups_a_dialogues_prompts(make_settings):
    s = make_settings()
    prompts = _prompts(s, 12).to_pylist()
    items = [(p["prompt_id"], LabelRequest(p["prompt_id"], json.loads(p["messages"]), {})) for p in prompts]
    dialogue = {p["prompt_id"]: p["dialogue_id"] for p in prompts}
    shuffled = order_requests(items, "shuffled", seed=1)
    assert sorted(shuffled) == sorted(items) and shuffled != items
    # prompts whose ask follows the dialogue share its prefix: each dialogue's are adjacent (an ask placed
    # before the dialogue shares no dialogue prefix, and sorts with the asks that begin like it)
    after = {p["prompt_id"] for p in prompts if p["variant"].endswith("-after")}
    ordered = [dialogue[k] if k in after else None for k, _ in order_requests(shuffled, "prefix")]
    runs = [d for i, d in enumerate(ordered) if d is not None and (i == 0 or ordered[i - 1] != d)]
    assert len(runs) == len({d for d in ordered if d is not None}) > 5
    assert order_requests(items, "shuffled", seed=1) == shuffled  # seeded


def test_failure_rate_over_the_limit_fails_the_shard_after_writing_it(make_settings, fake_openai):
    srv = fake_openai(lambda body: "good" if is_judge(body) else "error500")
    s = _settings(make_settings, srv, DIALINSIGHT__LABELING__MAX_FAILURE_RATE="0.2")
    ctx = RunContext(s, "2026-11-25", "manual__fail")
    prompts = _prompts(s, 4)
    ctx.store.write_table("work/shard.parquet", prompts)
    with pytest.raises(TooManyFailures, match="http_500"):
        run_label_shard(ctx, {"shard": 0, "key": "work/shard.parquet", "n": prompts.num_rows})
    assert ctx.store.exists(ctx.key("label/shard-00000/quarantined.parquet"))  # the evidence stays


def test_a_failed_label_task_says_which_server_it_tried_and_what_to_check(make_settings):
    """Issue 14: "TooManyFailures: 4/4 requests failed ({'connection_error': 4})" named neither the
    URL nor what to check. The message now does both, and never holds the API key."""
    import socket

    with socket.socket() as sock:  # a free port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    s = make_settings(DIALINSIGHT__ENGINE__KIND="openai", DIALINSIGHT__ENGINE__BASE_URL=url,
                      DIALINSIGHT__ENGINE__MAX_RETRIES="0", DIALINSIGHT__ENGINE__API_KEY_ENV="DI_TEST_KEY")
    ctx = RunContext(s, "2026-11-25", "manual__down")
    prompts = _prompts(s, 2)
    ctx.store.write_table("work/shard.parquet", prompts)
    with pytest.raises(TooManyFailures) as err:
        run_label_shard(ctx, {"shard": 0, "key": "work/shard.parquet", "n": prompts.num_rows})
    msg = str(err.value)
    assert "connection_error" in msg and url in msg and f"curl -s {url}/models" in msg
    assert "did not answer" in msg and "$DI_TEST_KEY" in msg


def test_compaction_is_size_tiered_and_keeps_the_first_answer(tmp_path):
    """Forty compactions of equal batches: each bucket keeps O(log rows) segments, sizes shrinking
    from oldest to newest; every key is found, and a key answered again later keeps its first answer."""
    import hashlib
    import itertools

    from dialinsight_core.inference.cache import MERGE_RATIO, _segment_ns_rows
    from dialinsight_core.storage import FileObjectStore

    cache = RequestCache(FileObjectStore(tmp_path), "cache", buckets=16, compact_chunks=1)

    def row(i: int, answer: str) -> dict:
        return {"request_key": hashlib.sha256(str(i).encode()).hexdigest(), "prompt_id": f"p{i}", "output_text": answer,
                "finish_reason": "stop", "prompt_tokens": 1, "completion_tokens": 1, "latency_s": 0.0, "error_code": None,
                "error_detail": None, "model": "m", "engine": "e", "created_at": 0.0}

    merges = 0
    for batch in range(40):
        cache.flush([row(batch * 160 + i, "first") for i in range(160)] + [row(i, "later") for i in range(0, 160, 7)])
        merges += cache.compact()["segment_merges"]
    segments = cache._segments()
    assert merges > 0 and len(segments) == 16
    for keys in segments.values():
        sizes = [_segment_ns_rows(k)[1] for k in keys]
        assert len(keys) <= 5, sizes  # ~400 rows a bucket: log4(400 / 10) + 1
        assert all(a >= MERGE_RATIO * b for a, b in itertools.pairwise(sizes)), sizes
    found = cache.lookup([row(i, "")["request_key"] for i in range(40 * 160)])
    assert len(found) == 6400 and {r["output_text"] for r in found.values()} == {"first"}


def test_cache_lookup_reads_only_the_segment_row_groups_holding_its_keys(tmp_path, monkeypatch):
    """Segments are sorted by key in row groups of SEGMENT_GROUP_ROWS: a lookup reads their key
    column, and whole rows only of the groups that hold a key it asks for; the first answer per key
    still wins across segments."""
    import hashlib

    import pyarrow.parquet as pq

    from dialinsight_core import storage
    from dialinsight_core.inference.cache import SEGMENT_GROUP_ROWS
    from dialinsight_core.storage import FileObjectStore

    store = FileObjectStore(tmp_path)

    def row(i: int, answer: str) -> dict:
        return {"request_key": hashlib.sha256(str(i).encode()).hexdigest(), "prompt_id": f"p{i}", "output_text": answer,
                "finish_reason": "stop", "prompt_tokens": 1, "completion_tokens": 1, "latency_s": 0.0, "error_code": None,
                "error_detail": None, "model": "m", "engine": "e", "created_at": 0.0}

    writer = RequestCache(store, "cache", buckets=1)
    writer.flush([row(i, "first") for i in range(5 * SEGMENT_GROUP_ROWS)])
    writer.compact()
    writer.flush([row(i, "later") for i in range(0, 5 * SEGMENT_GROUP_ROWS, 1000)] + [row(10**6, "new")])
    writer.compact()
    segments = writer._segments()["all"]
    assert len(segments) == 2 and pq.ParquetFile(tmp_path / segments[0]).num_row_groups == 5
    reads: list[tuple[int, int]] = []
    real = storage.SortedParquet.read

    def counted(self, values, schema=None):
        out = real(self, values, schema)
        reads.append((self.row_groups_read, self.pf.metadata.num_row_groups))
        return out

    monkeypatch.setattr(storage.SortedParquet, "read", counted)
    asked = [row(7, "")["request_key"], row(10**6, "")["request_key"], *(row(-i, "")["request_key"] for i in range(1, 200))]
    found = RequestCache(store, "cache", buckets=1).lookup(asked)  # a fresh process: nothing in memory
    assert {k: r["output_text"] for k, r in found.items()} == {asked[0]: "first", asked[1]: "new"}
    big = [r for r in reads if r[1] == 5]
    assert big == [(1, 5)]  # 200 keys asked, 199 of them absent: one group of five read whole
    again = RequestCache(store, "cache", buckets=1).lookup([row(0, "")["request_key"]])
    assert next(iter(again.values()))["output_text"] == "first"  # the older segment's answer wins


def test_request_keys_are_request_key_of_each_request():
    """The batch form hashes the payload in parts and serialises shared parts once: the keys (and
    so every cache written before it) are unchanged."""
    from dialinsight_core.llm import LabelRequest, request_key, request_keys

    schema_a = {"type": "object", "properties": {"摘要": {"type": "string"}, "b": {"type": "integer"}}}
    schema_b = {"required": ["x"], "type": "object"}
    reqs = [LabelRequest("p1", [{"role": "user", "content": "你好，月租４５００元"}], schema_a),
            LabelRequest("p2", [{"role": "system", "content": "s"}, {"role": "user", "content": "Hi \"quoted\" \n"}], schema_b),
            LabelRequest("p3", [{"content": "x", "role": "user"}], schema_a),
            LabelRequest("p4", [{"role": "user", "content": "no schema"}], None)]  # type: ignore[arg-type]
    sampling = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 256, "repetition_penalty": 1.05, "seed": 0}
    assert request_keys("Qwen/模型", reqs, sampling) == [request_key("Qwen/模型", r, sampling) for r in reqs]
