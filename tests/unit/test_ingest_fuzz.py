"""Property-based fuzzing of ingest: hostile inputs never crash it, and nothing is lost.

Random bytes, huge turns, wrong types, mixed encodings and broken structure are written as
JSONL, CSV and STAR files; ingest must return, and records read = kept + quarantined (every
quarantined record with a reason code).
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dialinsight_core.config import load_settings
from dialinsight_core.ingest import ingest

_text = st.one_of(st.text(max_size=80), st.text(alphabet="客户经纪人两室一厅预算元楼租房", max_size=40),
                  st.just("x" * 6000), st.just("138 1234 5678"), st.just(""))
_value = st.one_of(_text, st.integers(), st.floats(allow_nan=True), st.none(), st.booleans(),
                   st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
_role = st.one_of(st.sampled_from(["usr", "sys", "customer", "agent", "客户", "经纪人", "bot", ""]), st.integers(), st.none())
_turn = st.one_of(st.fixed_dictionaries({"role": _role, "text": _value}), _value)
_dialogue = st.one_of(
    st.fixed_dictionaries({"id": st.one_of(st.text(max_size=8), st.integers(), st.none(), st.lists(st.integers())),
                           "turns": st.one_of(st.lists(_turn, max_size=8), _value)}),
    _value,
)
_line = st.one_of(_dialogue.map(lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8")),
                  st.binary(max_size=60),
                  _dialogue.map(lambda d: json.dumps(d, ensure_ascii=False).encode("utf-16")),
                  st.text(max_size=40).map(lambda t: t.encode("gb18030", "replace")))
_csv_cell = st.one_of(st.text(max_size=20), st.integers(-2, 5).map(str), st.just('"'), st.just("\n"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(_line, max_size=12), rows=st.lists(st.lists(_csv_cell, min_size=1, max_size=5), max_size=10),
       star=st.lists(st.one_of(st.binary(max_size=80), _dialogue.map(lambda d: json.dumps({"DialogueID": 1, "Events": d},
                                                                                         default=str).encode())),
                     max_size=4),
       seed=st.integers(0, 2**16))
def test_hostile_inputs_never_crash_and_conserve_records(lines, rows, star, seed):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "dialogues").mkdir()
        (d / "a.jsonl").write_bytes(b"\n".join(lines))
        header = ["dialogue_id", "turn_idx", "role", "text"]
        rnd = random.Random(seed)
        body = [",".join(header)] + [",".join(r + [rnd.choice(["customer", "agent"])] * (4 - len(r))) for r in rows]
        (d / "b.csv").write_bytes("\n".join(body).encode("utf-8") if seed % 3 else "\n".join(body).encode("utf-16"))
        for i, blob in enumerate(star):
            (d / "dialogues" / f"s{i}.json").write_bytes(blob)
        roles = {"usr": "customer", "sys": "agent", "客户": "customer", "经纪人": "agent"}
        s = load_settings(environ={
            "DIALINSIGHT__STORAGE__URI": f"file://{d / 'store'}",
            "DIALINSIGHT__SOURCES": json.dumps([
                # optional: a hostile draw may give a source no file at all (tested in test_ingest.py)
                {"name": "j", "adapter": "jsonl", "uri": str(d), "roles": roles, "optional": True},
                {"name": "c", "adapter": "csv", "uri": str(d), "optional": True},
                {"name": "s", "adapter": "star", "uri": str(d), "optional": True},
            ]),
        })
        res = ingest(s)
        st_ = res.stats
        assert st_["files_read"] == st_["dialogues_kept"] + st_["quarantined"]
        assert res.dialogues.num_rows + res.quarantined.num_rows == st_["files_read"]
        assert all(q["reason_code"] and q["reason_detail"] is not None for q in res.quarantined.to_pylist())
        assert set(res.turns.column("role").to_pylist()) <= {"agent", "customer"}
        assert all(len(t) <= s.ingest.max_turn_chars for t in res.turns.column("text").to_pylist())
