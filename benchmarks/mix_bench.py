"""Does the *accepted* mix land on the targets, and after how many adaptive rounds?

The whole nightly (``run_all``: ingest, prompts, label, score, GX gates, publish) runs a few nights in
a row on the same corpus against the test suite's OpenAI-compatible server. The server answers by a
known rule: a fixed share of each task family's prompts get a repetition loop (which the rules
reject as ``repetitive``), the others a grounded answer. The rest of the cascade runs as in
production (the judge is off: its verdicts would add noise the rule does not control). Night 0 has
no history, so the sampler draws for the targets alone; each later night re-solves its weights
from the earlier nights' gate outcomes (``prompts.adaptive``).

    .venv/bin/python benchmarks/mix_bench.py [--corpus sample|synth] [--nights 3] [--n 0]

prints, per night, the task-family table (target, prompts, accepted) and each margin's largest
absolute deviation and chi-squared, as kept in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the rule: share of each family's prompts answered with a repetition loop (rejected by the rules)
LOOP_SHARE = {"information_extraction": 0.4, "summarisation": 0.1, "dialogue_generation": 0.5, "data_analysis": 0.7}


def rule_plan(settings: Any, loop_share: dict[str, float]) -> Any:
    """The server's plan: the family is known from the instruction in the prompt."""
    import hashlib

    from dialinsight_core.instructions import load_library
    from tests.support.fake_openai import _instruction, is_judge

    family = {r["text"]: r["task_family"] for r in load_library(settings).to_pylist()}

    def plan(body: dict[str, Any]) -> str:
        if is_judge(body):
            return "good"
        user = body["messages"][-1]["content"]
        fam = family.get(_instruction(user), "")
        x = int(hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return "repeat" if x < loop_share.get(fam, 0.0) else "good"

    return plan


def nights(env: dict[str, str], n_nights: int, loop_share: dict[str, float] | None, store_dir: Path) -> list[dict[str, Any]]:
    """``n_nights`` nightly runs on consecutive dates; ``loop_share`` None: the configured engine (the
    real model) instead of the rule's server."""
    from contextlib import nullcontext

    from dialinsight_core.config import load_settings
    from dialinsight_core.errors import BatchGateFailed
    from dialinsight_core.runs.nightly import RunContext, run_all
    from tests.support.fake_openai import FakeOpenAIServer

    out = []
    base = {"DIALINSIGHT__STORAGE__URI": f"file://{store_dir}", "DIALINSIGHT__QUALITY__JUDGE__ENABLED": "false", **env}
    server = FakeOpenAIServer(rule_plan(load_settings(environ=base), loop_share)) if loop_share else nullcontext()
    with server as srv:
        if srv is not None:
            base.update({"DIALINSIGHT__ENGINE__KIND": "openai", "DIALINSIGHT__ENGINE__MAX_RETRIES": "0",
                         "DIALINSIGHT__ENGINE__BASE_URL": srv.base_url})
        settings = load_settings(environ=base)
        for night in range(n_nights):
            ds = f"2026-11-{night + 1:02d}"
            ctx = RunContext(settings, ds, f"manual__mix{night}")
            t0 = time.perf_counter()
            try:
                run_all(ctx)
                passed = True
            except BatchGateFailed:
                passed = False
            prompts = ctx.store.read_json(ctx.key("prompts/stats.json"))
            gate = ctx.store.read_json(ctx.key("gate/stats.json"))
            out.append({"night": night, "ds": ds, "seconds": round(time.perf_counter() - t0, 1), "batch_gate": passed,
                        "prompts": prompts, "gate": gate})
            print(f"night {night}: {out[-1]['seconds']} s, batch gate {'pass' if passed else 'fail'}", file=sys.stderr)
    return out


def _fmt(p: float | None) -> str:
    return "—" if p is None else (f"{p:.3f}" if p >= 0.001 else "< 0.001")


def table(results: list[dict[str, Any]], targets: dict[str, float]) -> str:
    lines = ["| night | sampler | family | target | prompts | accepted (rate) | accepted share | deviation |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        p, g = r["prompts"], r["gate"]
        acc_mix = g["mix"]["task_family"]
        acc = {row["stratum"]: row for row in acc_mix["strata"]}
        n_prompts = {f: 0 for f in targets}
        for row in p["mix"]["target"]["task_family"]["strata"]:
            n_prompts[row["stratum"]] = row["observed"]
        sampler = "targets" if not p["sampler"]["runs"] else f"adaptive ({len(p['sampler']['runs'])} night(s))"
        for f, t in targets.items():
            a = acc.get(f, {"observed": 0, "share": 0.0, "deviation": -t})
            rate = a["observed"] / n_prompts[f] if n_prompts[f] else 0.0
            lines.append(f"| {r['night']} | {sampler} | {f} | {t:.2f} | {n_prompts[f]} ({p['family_share'][f]:.3f}) | "
                         f"{a['observed']} ({rate:.2f}) | {a['share']:.3f} | {a['deviation']:+.3f} |")
    lines += ["", "| night | accepted | batch gate | family max dev | family χ² (p) | role focus max dev | "
              "every stratum max dev | every stratum χ² (df, p) | s |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        m = r["gate"]["mix"]
        lines.append(f"| {r['night']} | {m['strata']['n']} | {'pass' if r['batch_gate'] else 'fail'} | "
                     f"{m['task_family']['max_abs_deviation']:.3f} | {m['task_family']['chi2']:.1f} "
                     f"({_fmt(m['task_family']['p_value'])}) | {m['role_focus']['max_abs_deviation']:.3f} | "
                     f"{m['strata']['max_abs_deviation']:.3f} | {m['strata']['chi2']:.1f} ({m['strata']['df']}, "
                     f"{_fmt(m['strata']['p_value'])}) | {r['seconds']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", choices=["sample", "synth"], default="sample",
                    help="sample: the bundled STAR sample (334 dialogues, en); synth: a seeded zh + en corpus")
    ap.add_argument("--n", type=int, default=600, help="dialogues of the synthetic corpus")
    ap.add_argument("--nights", type=int, default=3)
    ap.add_argument("--engine", choices=["rule", "config"], default="rule",
                    help="rule: the test server answering by LOOP_SHARE; config: the configured engine (the real model)")
    ap.add_argument("--max-dialogues", type=int, default=0, help="ingest.max_dialogues (0: all)")
    ap.add_argument("--tolerance", type=float, default=None, help="gates.task_mix_tolerance (default: the config's)")
    args = ap.parse_args()
    from dialinsight_core.config import load_settings

    with tempfile.TemporaryDirectory(prefix="mix-bench-") as tmp:
        env: dict[str, str] = {}
        if args.max_dialogues:
            env["DIALINSIGHT__INGEST__MAX_DIALOGUES"] = str(args.max_dialogues)
        if args.tolerance is not None:
            env["DIALINSIGHT__GATES__TASK_MIX_TOLERANCE"] = str(args.tolerance)
        if args.corpus == "synth":
            from benchmarks.synth_corpus import CorpusSpec, generate, source_config

            generate(CorpusSpec(n=args.n, seed=11, pii_share=0.0, exact_dup_share=0.0, near_dup_share=0.0), Path(tmp) / "corpus")
            env["DIALINSIGHT__SOURCES"] = json.dumps([source_config("synth", Path(tmp) / "corpus")])
        results = nights(env, args.nights, LOOP_SHARE if args.engine == "rule" else None, Path(tmp) / "store")
    settings = load_settings()
    targets = {f: v.target_share for f, v in settings.task_families.items()}
    tol = args.tolerance if args.tolerance is not None else settings.gates.task_mix_tolerance
    rule = f"rule: share answered with a loop {LOOP_SHARE}" if args.engine == "rule" else f"engine {settings.engine.model}"
    print(f"corpus {args.corpus}; {rule}; task_mix_tolerance {tol}\n")
    print(table(results, targets))


if __name__ == "__main__":
    main()
