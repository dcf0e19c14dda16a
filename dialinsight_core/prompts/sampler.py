"""Stratified, adaptive instruction sampling (docs/architecture.md, "Sampling").

A stratum is task family x scene x role focus x language. A dialogue's scene and language are
given; the sampler chooses instructions, so it sets the mix over family x role focus within each
(scene, language). Three steps:

1. **Joint targets.** The configured family shares and role-focus shares are fitted to the cells
   the library offers for this scene and language by iterative proportional fitting (the closest
   table to their product whose margins match; the family margin is fitted last, so it is exact
   whenever the library has the family at all).
2. **Adaptive multipliers.** Earlier runs' gate outcomes give an accept rate per stratum (shrunk to
   its family's rate, and that to the run's, by ``prior_strength`` pseudo-records). A stratum that
   is accepted less often is drawn more often, by ``global rate / stratum rate``, bounded to
   ``[1 / max_boost, max_boost]`` so no stratum ever disappears. The accepted mix then tends to the
   targets, not the prompt mix.
3. **Fixed-size draw with exact inclusion probabilities.** Each dialogue gets ``k`` distinct
   instructions by systematic probability-proportional-to-size sampling: instruction *i* is in the
   sample with probability ``k * w_i`` (capped at 1, the rest spread over the others), so the
   expected mix is known exactly and the audit compares what was drawn against it.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dialinsight_core.config import AdaptiveSettings, Settings

STRATUM = ("task_family", "scene", "role_focus", "lang")
DIMENSIONS = STRATUM


def stratum_key(family: str, scene: str, role: str, lang: str) -> str:
    return f"{family}|{scene}|{role}|{lang}"


def split_key(key: str) -> dict[str, str]:
    return dict(zip(STRATUM, key.split("|"), strict=True))


def fit_joint(cells: Sequence[tuple[str, str]], family: Mapping[str, float], role: Mapping[str, float],
              iterations: int = 50) -> dict[tuple[str, str], float]:
    """Shares over the (family, role) ``cells`` whose margins match the targets as closely as the cells
    allow (iterative proportional fitting from the targets' product; the family margin last)."""
    fams = sorted({f for f, _ in cells})
    roles = sorted({r for _, r in cells})
    ft = {f: family.get(f, 0.0) for f in fams}
    rt = {r: role.get(r, 0.0) for r in roles}
    fsum, rsum = sum(ft.values()) or 1.0, sum(rt.values())
    ft = {f: v / fsum for f, v in ft.items()}
    rt = {r: v / rsum for r, v in rt.items()} if rsum > 0 else dict.fromkeys(roles, 1.0 / len(roles))
    x = {c: ft[c[0]] * rt[c[1]] for c in cells}
    if not sum(x.values()):  # every present role has share 0: the family margin alone decides
        x = {c: ft[c[0]] for c in cells}
    for _ in range(iterations):
        for target, idx in ((rt, 1), (ft, 0)):
            tot: dict[str, float] = defaultdict(float)
            for c, v in x.items():
                tot[c[idx]] += v
            x = {c: (v * target[c[idx]] / tot[c[idx]] if tot[c[idx]] > 0 else 0.0) for c, v in x.items()}
    total = sum(x.values()) or 1.0
    return {c: v / total for c, v in x.items()}


def inclusion(p: np.ndarray, k: int) -> np.ndarray:
    """First-order inclusion probabilities of a fixed-size-``k`` draw proportional to ``p``: ``k * p``,
    with any value above 1 set to 1 and the rest of ``k`` spread over the others in proportion."""
    n = len(p)
    if k >= n:
        return np.ones(n)
    pi = np.zeros(n)
    free = np.ones(n, dtype=bool)
    left = float(k)
    while True:
        mass = p[free].sum()
        pi[free] = left * p[free] / mass if mass > 0 else left / free.sum()
        over = free & (pi >= 1.0 - 1e-12)
        if not over.any():
            return pi
        pi[over] = 1.0
        free &= ~over
        left = k - float((~free).sum())
        if left <= 0 or not free.any():
            pi[free] = 0.0
            return pi


def systematic(pi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices drawn by systematic sampling over a random order: each index is drawn with exactly its
    inclusion probability ``pi`` (which sums to the sample size), never twice."""
    k = round(float(pi.sum()))
    order = rng.permutation(len(pi))
    edges = np.cumsum(pi[order])
    edges[-1] = k  # float dust
    u = rng.random()
    pos = np.searchsorted(edges, u + np.arange(k), side="right")
    return order[pos]


@dataclass
class Multipliers:
    """Per-stratum multipliers from earlier runs' outcomes (1 everywhere when there are none)."""

    by_stratum: dict[str, float] = field(default_factory=dict)
    by_family: dict[str, float] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)  # the outcome files they come from, newest first

    def get(self, key: str) -> float:
        if key in self.by_stratum:
            return self.by_stratum[key]
        return self.by_family.get(key.split("|", 1)[0], 1.0)

    def digest(self) -> str:
        blob = json.dumps([self.by_stratum, self.by_family], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def record(self, full: bool = False) -> dict[str, Any]:
        """What the stage stats show (rounded); ``full``: the exact values, to pin and reload."""
        r = (lambda x: x) if full else (lambda x: round(x, 4))
        return {"runs": self.runs, "digest": self.digest(),
                "strata": {k: {"rate": r(self.rates.get(k, float("nan"))), "multiplier": r(v)}
                           for k, v in sorted(self.by_stratum.items())},
                "families": {k: r(v) for k, v in sorted(self.by_family.items())}}

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Multipliers:
        return cls(by_stratum={k: v["multiplier"] for k, v in rec.get("strata", {}).items()},
                   by_family=dict(rec.get("families", {})),
                   rates={k: v["rate"] for k, v in rec.get("strata", {}).items()}, runs=list(rec.get("runs", [])))


def solve_multipliers(outcomes: Sequence[Mapping[str, Any]], cfg: AdaptiveSettings) -> Multipliers:
    """Multipliers from outcome records (newest first; each ``{"key": ..., "strata": {key: [n, accepted]}}``)."""
    n: dict[str, float] = defaultdict(float)
    a: dict[str, float] = defaultdict(float)
    for age, rec in enumerate(outcomes[: cfg.history_runs]):
        w = cfg.decay ** age
        for key, (cnt, acc) in rec["strata"].items():
            n[key] += w * cnt
            a[key] += w * acc
    total_n = sum(n.values())
    if total_n <= 0:
        return Multipliers()
    glob = max(sum(a.values()) / total_n, cfg.min_rate)
    fn: dict[str, float] = defaultdict(float)
    fa: dict[str, float] = defaultdict(float)
    for key in n:
        fam = key.split("|", 1)[0]
        fn[fam] += n[key]
        fa[fam] += a[key]
    ps, lo, hi = cfg.prior_strength, 1.0 / cfg.max_boost, cfg.max_boost
    fam_rate = {f: (fa[f] + ps * glob) / (fn[f] + ps) if fn[f] + ps > 0 else glob for f in fn}

    def mult(rate: float) -> float:
        return float(min(hi, max(lo, glob / max(rate, cfg.min_rate))))

    rates = {k: (a[k] + ps * fam_rate[k.split("|", 1)[0]]) / (n[k] + ps) if n[k] + ps > 0 else 0.0 for k in n}
    return Multipliers(by_stratum={k: mult(r) for k, r in rates.items()},
                       by_family={f: mult(r) for f, r in fam_rate.items()}, rates=rates,
                       runs=[str(r.get("key", "")) for r in outcomes[: cfg.history_runs]])


class StratifiedSampler:
    """Candidate weights per dialogue (target design and adapted) and the fixed-size draw."""

    def __init__(self, settings: Settings, multipliers: Multipliers | None = None):
        self.settings = settings
        self.multipliers = multipliers or Multipliers()
        self.family_targets = {f: v.target_share for f, v in settings.task_families.items()}
        self.role_targets = dict(settings.prompts.role_focus_shares)
        self._cache: dict[tuple[Any, ...], tuple[list[dict[str, Any]], np.ndarray, np.ndarray, list[str]]] = {}

    def weights(self, instr: Sequence[dict[str, Any]], scene: str, lang: str
                ) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray, list[str]]:
        """(candidates, target weights, adapted weights, stratum keys) for a dialogue of this scene and
        language (cached: it depends on nothing else)."""
        ck = (scene, lang, id(instr))
        if ck in self._cache:
            return self._cache[ck]
        cands = [i for i in instr if i["scene"] in (scene, "*") and i["lang"] in (lang, "*") and i["status"] == "approved"]
        if not cands:
            self._cache[ck] = ([], np.zeros(0), np.zeros(0), [])
            return self._cache[ck]
        raw = np.array([self.settings.prompts.scene_weight if c["scene"] == scene else 1.0 for c in cands])
        cell_of = [(c["task_family"], c["role_focus"]) for c in cands]
        joint = fit_joint(sorted(set(cell_of)), self.family_targets, self.role_targets)
        cell_raw: dict[tuple[str, str], float] = defaultdict(float)
        for cell, r in zip(cell_of, raw, strict=True):
            cell_raw[cell] += r
        w0 = np.array([joint[cell] * r / cell_raw[cell] for cell, r in zip(cell_of, raw, strict=True)])
        keys = [stratum_key(c["task_family"], scene, c["role_focus"], lang) for c in cands]
        w = w0 * np.array([self.multipliers.get(k) for k in keys])
        w0 = w0 / w0.sum() if w0.sum() > 0 else np.full(len(cands), 1.0 / len(cands))
        w = w / w.sum() if w.sum() > 0 else w0
        self._cache[ck] = (cands, w0, w, keys)
        return self._cache[ck]


def audit(observed: Mapping[str, float], expected: Mapping[str, float]) -> dict[str, Any]:
    """Realised vs expected shares over strata: each stratum's deviation, the largest absolute one, and
    Pearson's chi-squared of the counts against the expected shares (p-value with df = strata - 1)."""
    from scipy.stats import chi2 as chi2_dist

    n = float(sum(observed.values()))
    e_total = float(sum(expected.values())) or 1.0
    keys = sorted(set(observed) | set(expected))
    rows, stat, cells, unexpected = [], 0.0, 0, 0.0
    for k in keys:
        o = float(observed.get(k, 0))
        t = float(expected.get(k, 0)) / e_total
        share = o / n if n else 0.0
        rows.append({"stratum": k, "observed": round(o), "share": round(share, 4), "target": round(t, 4),
                     "deviation": round(share - t, 4)})
        if t > 0 and n:
            stat += (o - n * t) ** 2 / (n * t)
            cells += 1
        elif o:
            unexpected += o
    df = max(cells - 1, 0)
    return {"n": int(n), "strata": rows,
            "max_abs_deviation": round(max((abs(r["deviation"]) for r in rows), default=0.0), 4),
            "chi2": round(stat, 3), "df": df,
            "p_value": (round(float(chi2_dist.sf(stat, df)), 6) if df and n else None),
            "unexpected": int(unexpected)}


def marginal(counts: Mapping[str, float], dim: str) -> dict[str, float]:
    """Counts over strata summed to one dimension of ``STRATUM``."""
    i = STRATUM.index(dim)
    out: dict[str, float] = defaultdict(float)
    for k, v in counts.items():
        out[k.split("|")[i]] += v
    return dict(out)


def mix_audit(observed: Mapping[str, float], expected: Mapping[str, float],
              targets: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, Any]:
    """The audit over every stratum and over each dimension's margin. ``targets`` (dimension ->
    configured shares, e.g. the task families') replace the expected margin where given."""
    out: dict[str, Any] = {"strata": audit(observed, expected)}
    for dim in DIMENSIONS:
        exp = dict((targets or {}).get(dim) or marginal(expected, dim))
        out[dim] = audit(marginal(observed, dim), exp)
    return out


def outcome_counts(rows: Iterable[tuple[str, str, str, str, bool]]) -> dict[str, list[int]]:
    """``{stratum: [records, accepted]}`` from (family, scene, role focus, language, accepted) rows."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for fam, scene, role, lang, accepted in rows:
        c = out[stratum_key(fam, scene, role, lang)]
        c[0] += 1
        c[1] += int(bool(accepted))
    return dict(out)
