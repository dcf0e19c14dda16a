"""The stratified, adaptive sampler (dialinsight_core/prompts/sampler.py) and what the prompt stage
records of it: joint targets, exact inclusion probabilities, bounded adaptive multipliers, the mix
audit, expression variety, long-dialogue windows and deterministic replay."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from dialinsight_core import schemas
from dialinsight_core.config import AdaptiveSettings
from dialinsight_core.ingest import ingest
from dialinsight_core.instructions import load_library, load_output_schemas
from dialinsight_core.prompts import TokenCounter, build_prompts, choose_window
from dialinsight_core.prompts.sampler import (
    audit,
    fit_joint,
    inclusion,
    outcome_counts,
    solve_multipliers,
    stratum_key,
    systematic,
)
from tests.conftest import FIXTURES
from tests.support.fake_openai import _instruction

FAM = {"ie": 0.3, "su": 0.25, "dg": 0.2, "da": 0.25}
ROLE = {"agent": 0.4, "customer": 0.3, "both": 0.3}


def test_joint_targets_match_both_margins_when_the_cells_allow():
    cells = [(f, r) for f in FAM for r in ROLE]
    joint = fit_joint(cells, FAM, ROLE)
    for f, t in FAM.items():
        assert sum(v for (ff, _), v in joint.items() if ff == f) == pytest.approx(t, abs=1e-9)
    for r, t in ROLE.items():
        assert sum(v for (_, rr), v in joint.items() if rr == r) == pytest.approx(t, abs=1e-6)
    # a library with one role per family: the family margin is exact, the roles follow from it
    sparse = fit_joint([("ie", "customer"), ("su", "both"), ("dg", "agent"), ("da", "agent")], FAM, ROLE)
    assert sparse[("ie", "customer")] == pytest.approx(0.3) and sparse[("da", "agent")] == pytest.approx(0.25)
    # a family with two roles splits its share towards the role targets
    two = fit_joint([("ie", "customer"), ("ie", "agent"), ("su", "both")], {"ie": 0.6, "su": 0.4}, ROLE)
    assert sum(two.values()) == pytest.approx(1.0) and two[("su", "both")] == pytest.approx(0.4)
    assert two[("ie", "agent")] > two[("ie", "customer")]


def test_inclusion_probabilities_are_exact_and_capped():
    p = np.array([0.55, 0.2, 0.15, 0.1])
    pi = inclusion(p, 2)
    assert pi.sum() == pytest.approx(2) and pi[0] == 1.0  # 2 x 0.55 > 1: always in, the rest spread
    assert pi[1:] == pytest.approx(np.array([0.2, 0.15, 0.1]) / 0.45)
    rng = np.random.default_rng(7)
    hits = np.zeros(4)
    for _ in range(20000):
        picks = systematic(pi, rng)
        assert len(picks) == 2 and len(set(picks.tolist())) == 2
        hits[picks] += 1
    assert hits / 20000 == pytest.approx(pi, abs=0.015)  # each drawn with exactly its probability
    assert inclusion(p, 4).tolist() == [1, 1, 1, 1]


def test_adaptive_multipliers_favour_strata_the_gates_reject_and_stay_bounded():
    cfg = AdaptiveSettings(prior_strength=0, max_boost=4)
    strata = {stratum_key("su", "s", "both", "en"): [100, 90], stratum_key("da", "s", "agent", "en"): [100, 10],
              stratum_key("ie", "s", "customer", "en"): [100, 0]}
    m = solve_multipliers([{"key": "k1", "strata": strata}], cfg)
    su, da, ie = (m.get(k) for k in strata)
    assert su < 1 < da and ie == 4.0  # accepted never: boosted to the bound, not to infinity
    assert m.get(stratum_key("da", "other", "agent", "zh")) == m.by_family["da"]  # an unseen stratum: its family's
    assert m.get(stratum_key("new", "s", "agent", "en")) == 1.0
    # older runs weigh less; no history: no adaptation
    old = {stratum_key("su", "s", "both", "en"): [100, 10]}
    newer_first = solve_multipliers([{"key": "new", "strata": strata}, {"key": "old", "strata": old}],
                                    AdaptiveSettings(prior_strength=0, decay=0.1))
    assert newer_first.get(stratum_key("su", "s", "both", "en")) < 1
    assert solve_multipliers([], cfg).by_stratum == {}
    # shrinkage: a stratum seen twice does not get an extreme rate of its own
    few = solve_multipliers([{"key": "k", "strata": {**strata, stratum_key("su", "x", "agent", "en"): [2, 0]}}],
                            AdaptiveSettings(prior_strength=20))
    assert few.get(stratum_key("su", "x", "agent", "en")) < 1.5


def test_audit_reports_deviation_and_chi_squared():
    a = audit({"a": 50, "b": 50}, {"a": 1, "b": 1})
    assert a["max_abs_deviation"] == 0 and a["chi2"] == 0 and a["p_value"] == 1.0
    b = audit({"a": 80, "b": 20}, {"a": 0.5, "b": 0.5})
    assert b["max_abs_deviation"] == 0.3 and b["chi2"] == pytest.approx(36.0) and b["p_value"] < 1e-6
    assert audit({"a": 5, "c": 1}, {"a": 1})["unexpected"] == 1
    assert outcome_counts([("su", "s", "both", "en", True), ("su", "s", "both", "en", False)]) == {"su|s|both|en": [2, 1]}


def _build(s, ds="2026-11-25", n=0, multipliers=None):
    from dialinsight_core.prompts import PromptBuilder

    res = ingest(s, max_dialogues=n or None)
    b = PromptBuilder(load_library(s), load_output_schemas(s), s, ds, multipliers=multipliers)
    by: dict[str, list] = {}
    for t in res.turns.to_pylist():
        by.setdefault(t["dialogue_id"], []).append(t)
    return b.add(res.dialogues.to_pylist(), by), b.stats(), res


def _digest(tbl: pa.Table) -> str:
    return hashlib.sha256(json.dumps(tbl.sort_by("prompt_id").to_pylist(), sort_keys=True).encode()).hexdigest()


def test_the_prompt_set_replays_exactly_from_inputs_config_seed_and_library(make_settings):
    s = make_settings(DIALINSIGHT__INGEST__MAX_DIALOGUES="60")
    a, _, _ = _build(s)
    b, _, _ = _build(s)
    assert _digest(a) == _digest(b)
    c, _, _ = _build(make_settings(DIALINSIGHT__INGEST__MAX_DIALOGUES="60", DIALINSIGHT__SEED="7"))
    assert _digest(c) != _digest(a)
    assert c.column("prompt_id").to_pylist() != a.column("prompt_id").to_pylist()


def test_every_stratum_is_recorded_and_audited_against_the_design(make_settings):
    zh = {"name": "zh", "uri": str(FIXTURES / "star_zh")}
    en = {"name": "star_apartment_en", "adapter": "star", "uri": "data/star_apartment_en",
          "scene_map": {"apartment_search": "rental_search", "apartment_schedule": "viewing_appointment"}}
    s = make_settings(DIALINSIGHT__SOURCES=json.dumps([en, zh]))
    prompts, stats, _ = _build(s)
    assert set(prompts.column("role_focus").to_pylist()) == {"agent", "customer", "both"}
    assert set(prompts.column("lang").to_pylist()) == {"en", "zh"}
    mix = stats["mix"]["planned"]
    # drawn vs the design's expected counts: sampling noise only, every stratum and margin
    assert mix["strata"]["p_value"] > 0.001 and mix["task_family"]["p_value"] > 0.001
    assert sum(r["observed"] for r in mix["strata"]["strata"]) == stats["prompts"]
    fam = stats["mix"]["target"]["task_family"]
    assert fam["max_abs_deviation"] < 0.06, fam  # against the configured family shares
    assert sum(stats["design"].values()) == pytest.approx(stats["prompts"], rel=1e-9)
    # expression variety, recorded per prompt and summarised
    d = stats["diversity"]
    assert set(d["template_share"]) == {"formal@2", "casual@2", "brief@2"}
    assert set(d["variant_share"]) == {"plain-after", "plain-before", "numbered-after", "numbered-before"}
    assert d["distinct_ngrams"]["2"] > 100 and d["distinct_asks"] > 40
    # the test server finds the instruction in every template, in both languages
    lib = {r["instruction_id"]: r["text"] for r in load_library(s).to_pylist()}
    for p in prompts.to_pylist():
        user = json.loads(p["messages"])[1]["content"]
        assert _instruction(user) == lib[p["instruction_id"]], (p["template_id"], p["variant"], user[-300:])


def test_multipliers_move_the_drawn_mix_towards_low_accept_strata(make_settings):
    s = make_settings(DIALINSIGHT__INGEST__MAX_DIALOGUES="200")
    base, _, _ = _build(s)
    strata = {}
    for p in base.to_pylist():
        key = stratum_key(p["task_family"], p["scene"], p["role_focus"], p["lang"])
        strata.setdefault(key, [0, 0])[0] += 1
        strata[key][1] += strata[key][0] % (10 if p["task_family"] == "data_analysis" else 2) == 0  # da: 1 in 10
    m = solve_multipliers([{"key": "r1", "strata": strata}], s.prompts.adaptive)
    adapted, stats, _ = _build(s, multipliers=m)
    share = (lambda t: Counter(t.column("task_family").to_pylist())["data_analysis"] / t.num_rows)  # noqa: E731
    assert share(adapted) > share(base) + 0.1
    assert stats["sampler"]["runs"] == ["r1"] and stats["sampler"]["families"]["data_analysis"] > 1
    assert _digest(adapted) != _digest(base)


def _long_dialogue(s, n_turns=60):
    res = ingest(s, max_dialogues=1)
    d = res.dialogues.to_pylist()[0]
    turns = [{**res.turns.to_pylist()[0], "turn_idx": i, "role": ("customer", "agent")[i % 2],
              "text": f"Turn {i}: " + ("I would like a flat with two bedrooms near the park. " if i % 2 == 0
                                       else "We have one on the third floor for 1500 a month. ") * 3}
             for i in range(n_turns)]
    return d, turns


def test_long_dialogues_are_windowed_by_turns_or_quarantined_never_cut(make_settings):
    s = make_settings(DIALINSIGHT__PROMPTS__CONTEXT_TOKENS="1024", DIALINSIGHT__PROMPTS__INSTRUCTIONS_PER_DIALOGUE="20")
    d, turns = _long_dialogue(s)
    res = build_prompts(schemas.table(schemas.DIALOGUES, [d]), schemas.table(schemas.TURNS, turns), load_library(s),
                        load_output_schemas(s), s, "2026-11-25")
    st = res.stats
    counter = TokenCounter(s)
    assert counter.tokenizer is not None and st["token_budget"]["counted_with"] == "tokenizer"
    fams = Counter(res.prompts.column("task_family").to_pylist())
    assert fams["dialogue_generation"] and fams["information_extraction"]  # windowed
    assert not fams["summarisation"] and not fams["data_analysis"]  # need the whole dialogue
    q = res.quarantined.to_pylist()
    assert {r["reason_code"] for r in q} == {"prompt_too_long"} and st["quarantined_prompts"] == len(q)
    assert "needs the whole dialogue" in q[0]["reason_detail"]
    assert st["prompts_sampled"] == st["prompts"] + st["quarantined_prompts"] and st["windowed"] == st["prompts"]
    for p in res.prompts.to_pylist():
        msgs = json.loads(p["messages"])
        n = sum(counter.count([m["content"] for m in msgs]))
        assert n <= counter.budget, (p["task_family"], n)
        first, last = map(int, p["turn_span"].split("-"))
        user = msgs[1]["content"]
        assert f"excerpt: turns {first}-{last} of 60" in user
        assert f"Turn {first}:" in user and f"Turn {last}:" in user
        assert f"Turn {first - 1}:" not in user and f"Turn {last + 1}:" not in user  # whole turns, nothing cut
        if p["task_family"] == "dialogue_generation":
            assert last == 59  # a reply keeps the last turns
    # a budget too small for any window: the dialogue is quarantined with its reason, nothing is lost
    tiny = make_settings(DIALINSIGHT__PROMPTS__CONTEXT_TOKENS="600", DIALINSIGHT__PROMPTS__MIN_WINDOW_TURNS="40")
    out = build_prompts(schemas.table(schemas.DIALOGUES, [d]), schemas.table(schemas.TURNS, turns), load_library(tiny),
                        load_output_schemas(tiny), tiny, "2026-11-25")
    assert out.prompts.num_rows == 0 and out.stats["quarantined"] == 1
    assert out.quarantined.column("reason_code").to_pylist() == ["prompt_too_long"]


def test_choose_window():
    tokens = [10] * 10
    assert choose_window(tokens, [True] * 10, 35, "tail", 2) == (7, 10)
    focus = [False] * 10
    focus[2] = focus[3] = True
    assert choose_window(tokens, focus, 30, "focus", 2) in {(1, 4), (2, 5)}
    assert choose_window(tokens, focus, 15, "focus", 2) is None
    assert choose_window(tokens, focus, 100, "whole", 2) is None
