"""The tests' S3 server (scripts/s3_server.py) keeps S3's promise that a conditional write's check
and write are one step, even when moto takes its time between them."""

from __future__ import annotations

import time

from dialinsight_core.storage import S3ObjectStore
from tests.support.pointer_race import increment_concurrently


def test_conditional_writes_are_atomic_when_moto_is_slow(monkeypatch, s3_bucket, moto_s3):
    from moto.s3 import models

    put = models.S3Backend.put_object

    def slow_put(self, *args, **kwargs):  # widen the window between moto's If-Match check and its write
        time.sleep(0.003)
        return put(self, *args, **kwargs)

    monkeypatch.setattr(models.S3Backend, "put_object", slow_put)
    store = S3ObjectStore(s3_bucket, "p", moto_s3, "us-east-1")
    assert store.swap_pointer("n.json", {"n": 0}, None)
    wins = increment_concurrently(store, "n.json", threads=6, each=15)
    # every successful swap moved the counter by one: no two writers won from the same version
    assert sorted(wins) == list(range(1, 91))
    assert store.read_pointer("n.json")[0]["n"] == 90
