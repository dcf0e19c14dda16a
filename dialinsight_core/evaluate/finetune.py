"""Chat-template SFT of a base model on export rows (transformers Trainer + PEFT LoRA).

The loss is on the assistant turn only: the tokens of the chat up to the generation prompt are
labelled -100. An example longer than ``max_length`` is skipped and counted (never cut silently:
a cut answer teaches the model to stop mid-sentence). Checkpoints go to the object store every
``checkpoint_every`` steps (files first, then ``latest.json``, the commit marker), so a task killed
with ``kill -9`` resumes from the last committed step on its next try: weights, optimizer,
scheduler and data order (Trainer's own resume).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dialinsight_core.config import FinetuneSettings
from dialinsight_core.storage import ObjectStore

log = logging.getLogger(__name__)
Messages = list[dict[str, str]]


@dataclass
class SftExamples:
    features: list[dict[str, list[int]]]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows


def sft_examples(tokenizer: Any, rows: Sequence[Messages], max_length: int) -> SftExamples:
    """Token ids and labels per chat; labels are -100 except on the final assistant message."""
    out = SftExamples([])
    for messages in rows:
        if not messages or messages[-1].get("role") != "assistant":
            out.skipped["no_assistant_turn"] = out.skipped.get("no_assistant_turn", 0) + 1
            continue
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True, return_dict=False)
        full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
        if full[:len(prompt)] != prompt or len(full) <= len(prompt):
            out.skipped["template_mismatch"] = out.skipped.get("template_mismatch", 0) + 1
            continue
        if len(full) > max_length:
            out.skipped["too_long"] = out.skipped.get("too_long", 0) + 1
            continue
        out.features.append({"input_ids": list(full), "attention_mask": [1] * len(full),
                             "labels": [-100] * len(prompt) + list(full[len(prompt):])})
    return out


def collate(pad_id: int) -> Any:
    """Right-pads a batch; padded labels are -100."""
    def fn(batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        def padded(key: str, value: int) -> Any:
            return torch.tensor([b[key] + [value] * (width - len(b[key])) for b in batch])
        return {"input_ids": padded("input_ids", pad_id), "attention_mask": padded("attention_mask", 0),
                "labels": padded("labels", -100)}
    return fn


@dataclass
class FinetuneResult:
    steps: int
    rows: int
    skipped: dict[str, int]
    losses: list[tuple[int, float]]  # (step, training loss) as logged
    resumed_from: int | None
    adapter_key: str  # object-store prefix of the final adapter (or full model)
    seconds: float
    steps_run: int = 0  # optimizer steps taken by this call (the rest came from the checkpoint)

    def as_dict(self) -> dict[str, Any]:
        # a step's loss is one small batch's: the means over the first and the last quarter of the steps
        k = max(1, len(self.losses) // 4)
        first = round(sum(x for _, x in self.losses[:k]) / k, 4) if self.losses else None
        last = round(sum(x for _, x in self.losses[-k:]) / k, 4) if self.losses else None
        return {"steps": self.steps, "rows": self.rows, "skipped": self.skipped, "first_loss": first,
                "last_loss": last, "losses": self.losses, "resumed_from": self.resumed_from,
                "steps_run": self.steps_run, "adapter": self.adapter_key, "seconds": round(self.seconds, 1)}


def upload_dir(store: ObjectStore, local: Path, prefix: str) -> None:
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        store.put_file(f"{prefix}/{path.relative_to(local).as_posix()}", path)


def download_dir(store: ObjectStore, prefix: str, local: Path) -> None:
    for key in store.list(prefix + "/"):
        dest = local / key[len(prefix) + 1:]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(store.read_bytes(key))


def committed_checkpoint(store: ObjectStore, prefix: str) -> dict[str, Any] | None:
    """The last checkpoint whose files were all stored (``latest.json`` is written after them)."""
    key = f"{prefix}/checkpoints/latest.json"
    return store.read_json(key) if store.exists(key) else None


def _callbacks(store: ObjectStore, prefix: str, max_steps: int, label: str) -> list[Any]:
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """One line per logged step in the task log: step, loss, ETA."""

        def __init__(self) -> None:
            self.start = time.monotonic()
            self.first_step: int | None = None
            self.steps_run = 0  # optimizer steps taken in this process (fewer than max_steps after a resume)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.steps_run += 1

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not logs or "loss" not in logs:
                return
            if self.first_step is None:
                self.first_step = max(0, state.global_step - 1)
            done = state.global_step - self.first_step
            rate = (time.monotonic() - self.start) / max(1, done)
            log.info("finetune %s: step %d/%d loss %.4f lr %.2e eta %.0f s", label, state.global_step, max_steps,
                     logs["loss"], logs.get("learning_rate", 0.0), rate * (max_steps - state.global_step))

    class StoreCheckpoints(TrainerCallback):
        """Every saved checkpoint to the object store, then the pointer to it."""

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            step = state.global_step
            local = Path(args.output_dir) / f"checkpoint-{step}"
            if not local.is_dir():
                return
            key = f"{prefix}/checkpoints/checkpoint-{step}"
            upload_dir(store, local, key)
            store.write_json(f"{prefix}/checkpoints/latest.json", {"step": step, "key": key})
            log.info("finetune %s: checkpoint %d stored at %s", label, step, store.url(key))

    return [Progress(), StoreCheckpoints()]


def load_base(model_path: str, dtype: str = "float32", threads: int = 0) -> tuple[Any, Any]:
    """The model and its tokenizer (pad token = eos when it has none); ``threads``: torch's CPU
    threads (0 = torch's default)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a tqdm bar on stderr reads as an error line in an Airflow task log
    if threads:
        torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
    return model, tok


def finetune(rows: Sequence[Messages], model_path: str, cfg: FinetuneSettings, store: ObjectStore, prefix: str,
             label: str = "sft") -> tuple[Any, Any, FinetuneResult]:
    """Fine-tune on ``rows``; returns (model, tokenizer, result). Resumes from the stored checkpoint
    under ``prefix`` when there is one; the final adapter is stored at ``<prefix>/final``."""
    import torch
    from transformers import Trainer, TrainingArguments, set_seed

    t0 = time.monotonic()
    set_seed(cfg.seed)
    model, tok = load_base(model_path, cfg.dtype, cfg.threads)
    ex = sft_examples(tok, rows, cfg.max_length)
    if not ex.features:
        raise ValueError(f"finetune {label}: none of {len(rows)} rows fits (skipped: {ex.skipped})")
    if cfg.lora_rank > 0:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                 target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM"))
    work = Path(tempfile.mkdtemp(prefix=f"dialinsight-ft-{label}-"))
    try:
        resume = None
        done = committed_checkpoint(store, prefix)
        if done:
            resume = work / f"checkpoint-{done['step']}"
            download_dir(store, done["key"], resume)
            log.info("finetune %s: resuming from step %d (%s)", label, done["step"], store.url(done["key"]))
        args = TrainingArguments(
            output_dir=str(work), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate,
            lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_steps, weight_decay=0.0,
            logging_steps=1, save_strategy="steps", save_steps=cfg.checkpoint_every, save_total_limit=2,
            seed=cfg.seed, data_seed=cfg.seed, report_to=[], disable_tqdm=True, dataloader_num_workers=0,
            use_cpu=not torch.cuda.is_available(), remove_unused_columns=False)
        callbacks = _callbacks(store, prefix, cfg.max_steps, label)
        trainer = Trainer(model=model, args=args, train_dataset=ex.features, data_collator=collate(tok.pad_token_id),
                          callbacks=callbacks)
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        losses = [(int(h["step"]), round(float(h["loss"]), 4)) for h in trainer.state.log_history if "loss" in h]
        final = work / "final"
        model.save_pretrained(final)
        tok.save_pretrained(final)
        (final / "dialinsight_finetune.json").write_text(json.dumps(
            {"base_model": model_path, "steps": trainer.state.global_step, "config": cfg.model_dump()}, indent=1))
        upload_dir(store, final, f"{prefix}/final")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    model.eval()
    return model, tok, FinetuneResult(trainer.state.global_step, len(ex.features), ex.skipped, losses,
                                      done["step"] if done else None, f"{prefix}/final", time.monotonic() - t0,
                                      callbacks[0].steps_run)


def load_finetuned(store: ObjectStore, prefix: str, model_path: str, dtype: str = "float32",
                   threads: int = 0) -> tuple[Any, Any]:
    """Base model + the stored final adapter (a retried evaluation does not train again)."""
    model, tok = load_base(model_path, dtype, threads)
    local = Path(tempfile.mkdtemp(prefix="dialinsight-adapter-"))
    try:
        download_dir(store, f"{prefix}/final", local)
        if (local / "adapter_config.json").exists():
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, local)
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(local)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    return model.eval(), tok
