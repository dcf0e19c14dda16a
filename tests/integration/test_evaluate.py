"""dialinsight_evaluate's parts with the real model (SmolLM2-135M on CPU): the general scorer, a
short real fine-tune, resume after kill -9, and the held-out split of a real snapshot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dialinsight_core.config import FinetuneSettings, load_settings
from dialinsight_core.evaluate import finetune as ft
from dialinsight_core.evaluate import general as g
from dialinsight_core.runs.evaluate import base_model
from dialinsight_core.storage import open_store

ROOT = Path(__file__).resolve().parents[2]
MODEL = base_model(load_settings())
pytestmark = pytest.mark.skipif(not Path(MODEL).is_dir(), reason=f"no model folder at {MODEL} (make setup)")

# tiny chats whose answers the model can learn in a few steps (short: a step takes well under a second)
ROWS = [[{"role": "system", "content": "You answer with the code word."},
         {"role": "user", "content": f"Dialogue {i}: the customer asks for a viewing on day {i}. What is the code word?"},
         {"role": "assistant", "content": "ZEBRA-KIWI viewing confirmed."}] for i in range(8)]
CFG = dict(max_steps=6, batch_size=2, learning_rate=2e-3, checkpoint_every=2, max_length=256, lora_rank=8, seed=0)


@pytest.fixture(scope="module")
def base():
    import torch

    torch.set_num_threads(2)
    return ft.load_base(MODEL)


def _loss(model, tok, rows) -> float:
    import torch

    ex = ft.sft_examples(tok, rows, 256)
    batch = ft.collate(tok.pad_token_id)(ex.features)
    with torch.inference_mode():
        return float(model(**batch).loss)


def test_kv_reuse_scores_what_a_plain_pass_scores_and_known_answers_win(base):
    """The scorer's cached prefix gives the log-likelihoods of one full pass per choice; on items
    whose answer is spelled out in the question, the real model picks it."""
    import torch

    model, tok = base
    model.eval()
    scorer = g.HFScorer(model, tok)
    items = g.stratified(g.load_set(ROOT / "data" / "general_eval", "mmlu_redux_en"), 2, 0) + \
        g.stratified(g.load_set(ROOT / "data" / "general_eval", "gaokao_bench_zh"), 1, 0)
    for it in items:
        fast = scorer.loglikelihoods(it.prefix(), it.continuations())
        pre = tok(it.prefix(), add_special_tokens=False)["input_ids"]
        for got, cont in zip(fast, it.continuations(), strict=True):
            ids = tok(cont, add_special_tokens=False)["input_ids"]
            with torch.inference_mode():
                lp = torch.log_softmax(model(input_ids=torch.tensor([pre + ids])).logits[0].float(), -1)
            assert got == pytest.approx(sum(float(lp[len(pre) - 1 + j, t]) for j, t in enumerate(ids)), abs=1e-3)
    known = []
    for lang, sep, words in (("en", " ", ["giraffe", "Montreal", "saxophone", "umbrella", "seventeen", "table", "blue"]),
                             ("zh", "，", ["苹果", "香蕉", "桌子", "蓝色", "上海", "老师", "汽车"])):
        for i, w in enumerate(words):  # the answer repeated eight times: what any language model continues with
            choices = tuple(sorted([*[x for x in words if x != w][:3], w]))
            known.append(g.Item(f"known_{lang}", lang, str(i), "copy", sep.join([w] * 8), choices, choices.index(w)))
    rows = g.score_items(known, scorer)
    assert g.accuracy(rows, "correct")["acc"] == g.accuracy(rows)["acc"] == 1.0, rows


def test_a_short_real_finetune_changes_the_weights_and_lowers_the_loss(tmp_path):
    store = open_store(f"file://{tmp_path}/store")
    model0, tok = ft.load_base(MODEL)
    before = _loss(model0, tok, ROWS)
    model, tok, result = ft.finetune(ROWS, MODEL, FinetuneSettings(**CFG), store, "eval/x/models/accepted", "test")
    after = _loss(model, tok, ROWS)
    assert result.steps == result.steps_run == 6 and result.rows == 8 and result.resumed_from is None
    assert after < before * 0.8, (before, after)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.detach().abs().sum()) > 0 for p in lora_b)  # LoRA B starts at zero: the adapter learned
    assert store.exists("eval/x/models/accepted/final/adapter_model.safetensors")
    assert store.read_json("eval/x/models/accepted/checkpoints/latest.json")["step"] == 6
    # the stored adapter reloads to the same model
    again, _ = ft.load_finetuned(store, "eval/x/models/accepted", MODEL)
    assert _loss(again, tok, ROWS) == pytest.approx(after, rel=1e-4)


def test_long_examples_are_skipped_and_counted_not_cut():
    _, tok = ft.load_base(MODEL)
    long = [[{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "ok"}]]
    no_answer = [[{"role": "user", "content": "hi"}]]
    ex = ft.sft_examples(tok, ROWS[:2] + long + no_answer, 128)
    assert len(ex.features) == 2 and ex.skipped == {"too_long": 1, "no_assistant_turn": 1}
    f = ex.features[0]
    answer = [t for t, lab in zip(f["input_ids"], f["labels"], strict=True) if lab != -100]
    assert "ZEBRA-KIWI" in tok.decode(answer) and "code word" not in tok.decode(answer)  # loss on the answer only


@pytest.mark.timeout(600)
def test_kill_9_mid_training_resumes_from_the_last_stored_checkpoint(tmp_path):
    store_uri = f"file://{tmp_path}/store"
    store = open_store(store_uri)
    prefix = "eval/k/models/accepted"
    spec = {"store": store_uri, "prefix": prefix, "model": MODEL, "rows": ROWS, "out": str(tmp_path / "out.json"),
            "finetune": CFG | {"max_steps": 10}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.finetune_proc", str(tmp_path / "spec.json")], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    while not store.exists(f"{prefix}/checkpoints/latest.json"):
        assert proc.poll() is None, "the fine-tune ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = store.read_json(f"{prefix}/checkpoints/latest.json")["step"]
    assert killed_at < 10 and not store.exists(f"{prefix}/final/adapter_model.safetensors")
    subprocess.run([sys.executable, "-m", "tests.support.finetune_proc", str(tmp_path / "spec.json")], cwd=ROOT,
                   env=env, check=True, timeout=400, capture_output=True)
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["resumed_from"] == killed_at and result["steps"] == 10
    assert result["steps_run"] == 10 - killed_at  # no step trained twice
    assert [step for step, _ in result["losses"]] == list(range(1, 11))  # the loss curve spans the kill
    assert store.exists(f"{prefix}/final/adapter_model.safetensors")
