"""General ability: multiple-choice accuracy by the log-likelihood of each choice, before and after.

The paper checked that domain fine-tuning did not collapse general ability with MMLU and C-Eval.
The bundled sets (``data/general_eval/``: MMLU-Redux en, GAOKAO-Bench and AGIEval-gaokao zh, each
with its license) share one schema: ``{"id", "subject", "question", "choices": [4], "answer"}``.

An item is scored as a cloze: the model reads ``Question: … Answer:`` and each choice's text is
scored as the continuation (summed token log-probabilities). ``acc`` picks the largest sum,
``acc_norm`` the largest sum per character of the choice (so long choices are not penalised for
their length). The question is run once and its key/value cache reused for the four choices, so an
item costs one prefix pass, not four. Before and after use the same items, so the change is a paired
difference with its own interval: a 135M model sits near chance, and the interval shows that.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

LETTERS = "ABCD"
PROMPTS = {  # (question block, the word before the answer); the choice follows after one space in English
    "en": ("Question: {question}\nAnswer:", " "),
    "zh": ("问题：{question}\n答案：", ""),
}


@dataclass(frozen=True)
class Item:
    set: str
    lang: str
    id: str
    subject: str
    question: str
    choices: tuple[str, ...]
    answer: int  # index of the right choice

    def prefix(self) -> str:
        return PROMPTS[self.lang][0].format(question=self.question.strip())

    def continuations(self) -> list[str]:
        sep = PROMPTS[self.lang][1]
        return [sep + c.strip() for c in self.choices]


def set_lang(name: str) -> str:
    return "zh" if name.endswith("_zh") else "en"


def load_set(root: Path, name: str, split: str = "test") -> list[Item]:
    """One bundled set (``<root>/<name>/<split>.jsonl``) as items; a malformed line raises with its number."""
    items = []
    path = root / name / f"{split}.jsonl"
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        choices, answer = row.get("choices"), row.get("answer")
        if not isinstance(choices, list) or len(choices) != 4 or answer not in LETTERS:
            raise ValueError(f"{path}:{n}: expected 4 choices and an answer in A-D, got {choices!r} / {answer!r}")
        items.append(Item(name, set_lang(name), str(row["id"]), str(row["subject"]), str(row["question"]),
                          tuple(str(c) for c in choices), LETTERS.index(answer)))
    return items


def stratified(items: Sequence[Item], n: int, seed: int) -> list[Item]:
    """``n`` items (0 = all) spread evenly over subjects: a seeded shuffle within each subject, then
    one per subject in turn, so a small budget still covers every subject."""
    if n <= 0 or n >= len(items):
        return list(items)
    by_subject: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        by_subject[it.subject].append(it)
    rng = random.Random(seed)
    queues = []
    for subject in sorted(by_subject):
        group = sorted(by_subject[subject], key=lambda it: it.id)
        rng.shuffle(group)
        queues.append(group)
    out: list[Item] = []
    while len(out) < n:
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop())
    return out


class ChoiceScorer(Protocol):
    """Summed log-probability of each continuation given the prefix (one list per item)."""

    def loglikelihoods(self, prefix: str, continuations: Sequence[str]) -> list[float]: ...


class HFScorer:
    """A transformers causal LM (a PEFT model too) as a ChoiceScorer: the prefix runs once, its cache
    is repeated for the continuations, which run as one padded batch."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int = 2048):
        self.model, self.tok, self.max_length = model, tokenizer, max_length

    def loglikelihoods(self, prefix: str, continuations: Sequence[str]) -> list[float]:
        import torch

        pre = self.tok(prefix, add_special_tokens=False)["input_ids"]
        conts = [self.tok(c, add_special_tokens=False)["input_ids"] or [self.tok.eos_token_id] for c in continuations]
        longest = max(len(c) for c in conts)
        pre = pre[-(self.max_length - longest):]  # a question longer than the window keeps its end
        k = len(conts)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        with torch.inference_mode():
            first = self.model(input_ids=torch.tensor([pre]), use_cache=True)
            cache = first.past_key_values
            cache.batch_repeat_interleave(k)
            ids = torch.tensor([c + [pad] * (longest - len(c)) for c in conts])
            mask = torch.tensor([[1] * len(pre) + [1] * len(c) + [0] * (longest - len(c)) for c in conts])
            rest = self.model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True)
            last = torch.log_softmax(first.logits[0, -1].float(), -1)
            later = torch.log_softmax(rest.logits.float(), -1)
        out = []
        for i, c in enumerate(conts):
            lp = float(last[c[0]])
            for j in range(1, len(c)):
                lp += float(later[i, j - 1, c[j]])
            out.append(lp)
        return out


def score_items(items: Sequence[Item], scorer: ChoiceScorer) -> list[dict[str, Any]]:
    """Per item: the log-likelihoods, the picks by ``acc`` and ``acc_norm``, and whether each is right."""
    rows = []
    for it in items:
        lls = scorer.loglikelihoods(it.prefix(), it.continuations())
        norm = [ll / max(1, len(c.strip())) for ll, c in zip(lls, it.choices, strict=True)]
        pick = max(range(len(lls)), key=lls.__getitem__)
        pick_norm = max(range(len(norm)), key=norm.__getitem__)
        rows.append({"set": it.set, "id": it.id, "subject": it.subject, "lang": it.lang, "answer": it.answer,
                     "loglik": [round(x, 4) for x in lls], "pick": pick, "pick_norm": pick_norm,
                     "correct": pick == it.answer, "correct_norm": pick_norm == it.answer})
    return rows


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of k successes in n (95 % by default)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy(rows: Sequence[dict[str, Any]], key: str = "correct_norm") -> dict[str, Any]:
    """Accuracy with its 95 % Wilson interval, overall and per set."""
    def one(rs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        k = sum(bool(r[key]) for r in rs)
        lo, hi = wilson(k, len(rs))
        return {"n": len(rs), "correct": k, "acc": round(k / len(rs), 4) if rs else None,
                "ci95": [round(lo, 4), round(hi, 4)]}
    by_set: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_set[r["set"]].append(r)
    return {"metric": key, **one(rows), "chance": 0.25, "by_set": {s: one(rs) for s, rs in sorted(by_set.items())}}


def paired_change(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]],
                  key: str = "correct_norm", z: float = 1.96) -> dict[str, Any]:
    """after − before on the same items: the mean difference in accuracy points with a 95 % interval
    from the paired differences, and the items that flipped each way (McNemar's b and c)."""
    b_by = {(r["set"], r["id"]): bool(r[key]) for r in before}
    pairs = [(b_by[(r["set"], r["id"])], bool(r[key])) for r in after if (r["set"], r["id"]) in b_by]
    n = len(pairs)
    if n == 0:
        return {"n": 0, "delta_points": None, "ci95_points": None, "right_to_wrong": 0, "wrong_to_right": 0}
    d = [int(a) - int(b) for b, a in pairs]
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1) if n > 1 else 0.0
    half = z * math.sqrt(var / n)
    return {"n": n, "delta_points": round(100 * mean, 2),
            "ci95_points": [round(100 * (mean - half), 2), round(100 * (mean + half), 2)],
            "right_to_wrong": sum(1 for b, a in pairs if b and not a),
            "wrong_to_right": sum(1 for b, a in pairs if a and not b)}
