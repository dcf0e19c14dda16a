"""The snapshot commit protocol's primitives (docs/reliability.md): the compare-and-swap pointer on
both backends, latest.json's forward-only rule and its override, and retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dialinsight_core.config import RetentionSettings
from dialinsight_core.publishing import apply_retention, committed_snapshots, move_latest
from dialinsight_core.storage import LATEST_KEY, FileObjectStore, S3ObjectStore
from tests.support.pointer_race import increment_concurrently


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    if request.param == "file":
        return FileObjectStore(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return S3ObjectStore(bucket, "p", request.getfixturevalue("moto_s3"), "us-east-1")


def test_swap_pointer_is_compare_and_swap(store):
    assert store.read_pointer("ptr.json") == (None, None)
    assert store.swap_pointer("ptr.json", {"v": 1}, None)
    assert not store.swap_pointer("ptr.json", {"v": 9}, None)  # "only if absent" fails once it exists
    obj, version = store.read_pointer("ptr.json")
    assert obj == {"v": 1}
    assert store.swap_pointer("ptr.json", {"v": 2}, version)
    assert not store.swap_pointer("ptr.json", {"v": 3}, version)  # a stale version loses
    assert store.read_pointer("ptr.json")[0] == {"v": 2} == store.read_json("ptr.json")


def test_concurrent_increments_lose_no_update(store):
    store.swap_pointer("n.json", {"n": 0}, None)
    increment_concurrently(store, "n.json", threads=4, each=10)
    assert store.read_pointer("n.json")[0]["n"] == 40 == store.read_json("n.json")["n"]


def _commit(store, ds: str, run: str, at: datetime) -> dict:
    prefix = f"snapshots/ds={ds}/run={run}"
    store.write_bytes(f"{prefix}/data/part-00000.parquet", b"x")
    store.write_json(f"{prefix}/manifest.json", {"snapshot_id": f"{ds}/{run}", "ds": ds, "created_at": at.isoformat()},
                     overwrite=False)
    return {"snapshot_id": f"{ds}/{run}", "uri": store.url(prefix), "manifest": f"{prefix}/manifest.json", "ds": ds,
            "created_at": at.isoformat()}


def test_latest_moves_forward_only_unless_promoted_and_never_for_an_override_run(store):
    now = datetime.now(UTC)
    new = _commit(store, "2026-11-25", "a", now)
    assert move_latest(store, new, [], False)["moved"]
    old = _commit(store, "2026-11-20", "b", now + timedelta(seconds=1))
    out = move_latest(store, old, [], False)
    assert not out["moved"] and "forward" in out["why"] and store.read_json(LATEST_KEY)["snapshot_id"] == new["snapshot_id"]
    tiny = _commit(store, "2026-11-26", "tiny", now)
    out = move_latest(store, tiny, ["max_dialogues"], False)
    assert not out["moved"] and "promote=true" in out["why"]
    assert move_latest(store, old, [], True)["moved"]  # the documented override
    assert store.read_json(LATEST_KEY) == {**old, "previous": new["snapshot_id"]}
    assert move_latest(store, old, [], False) == {"moved": True, "why": "latest.json already points at this snapshot",
                                                   "latest": old["snapshot_id"]}


def test_retention_keeps_latest_and_deletes_the_manifest_first(store):
    now = datetime.now(UTC)
    entries = [_commit(store, f"2026-11-{d:02d}", "r", now - timedelta(days=30 - d)) for d in range(20, 26)]
    move_latest(store, entries[0], [], True)  # latest points at the oldest one
    out = apply_retention(store, RetentionSettings(keep_last=2))
    kept = [s["snapshot_id"] for s in committed_snapshots(store)]
    assert kept == [entries[0]["snapshot_id"], entries[4]["snapshot_id"], entries[5]["snapshot_id"]]
    assert sorted(out["deleted"]) == sorted(e["snapshot_id"] for e in entries[1:4])
    assert not store.list("snapshots/ds=2026-11-21/")  # every file of a deleted snapshot is gone
    assert apply_retention(store, RetentionSettings(max_age_days=5.5))["deleted"] == [entries[4]["snapshot_id"]]
    assert apply_retention(store, RetentionSettings()) == {"rule": "off", "deleted": []}


def test_retention_removes_a_dead_publish_but_not_one_in_progress(store):
    now = datetime.now(UTC)
    latest = _commit(store, "2026-11-25", "ok", now)
    move_latest(store, latest, [], False)
    store.write_bytes("snapshots/ds=2026-11-24/run=dead/data/part-00000.parquet", b"half")  # no manifest
    rule = RetentionSettings(keep_last=5, orphans_after_hours=1)
    assert apply_retention(store, rule)["orphans"] == []  # just written: maybe a publish in progress
    later = now + timedelta(hours=2)
    assert apply_retention(store, rule, now=later)["orphans"] == ["snapshots/ds=2026-11-24/run=dead"]
    assert not store.list("snapshots/ds=2026-11-24/") and store.exists(latest["manifest"])


def test_the_cli_lists_retains_and_compacts(tmp_path, monkeypatch, capsys):
    import json

    from dialinsight_core.__main__ import main

    store = FileObjectStore(tmp_path / "store")
    monkeypatch.setenv("DIALINSIGHT__STORAGE__URI", f"file://{tmp_path / 'store'}")
    now = datetime.now(UTC)
    entries = [_commit(store, f"2026-11-{d}", "r", now - timedelta(days=30 - d)) for d in (20, 21, 22)]
    move_latest(store, entries[2], [], False)
    assert main(["snapshots"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["latest"]["snapshot_id"] == entries[2]["snapshot_id"] and len(listed["committed"]) == 3
    assert main(["retain", "--keep-last", "1"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["deleted"]) == [entries[0]["snapshot_id"], entries[1]["snapshot_id"]]
    assert main(["compact-cache"]) == 0
    assert json.loads(capsys.readouterr().out)["cache/label"]["compacted"] is True
