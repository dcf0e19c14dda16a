"""What the labeling model *is*, as a hash: the identity of its weights and config, not its path.

A folder (vLLM in-process) is fingerprinted by its config and tokenizer files in full and each
weight file by name, size and its first and last MiB (the safetensors header with every tensor's
dtype, shape and offset, plus data at both ends): new weights in the same folder get a new
fingerprint, and a 100 GB model is not read whole. A model the engine only knows by name (an
OpenAI-compatible server, a hub id) is recorded as ``name:<model>``, plus ``@<revision>`` when
``engine.model_revision`` is set: the server does not expose its weights. Published rows carry it
as ``model_fingerprint`` (docs/dataset.md), and the request cache keys on it.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from dialinsight_core.config import Settings
from dialinsight_core.llm import model_name

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")
_EDGE = 1 << 20  # bytes read at each end of a weight file


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as fh:
        if not path.name.endswith(WEIGHT_SUFFIXES) or size <= 2 * _EDGE:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(fh.read(_EDGE))
            fh.seek(size - _EDGE)
            h.update(fh.read(_EDGE))
    return f"{size}:{h.hexdigest()}"


@cache
def _folder_fingerprint(folder: Path, stamp: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, _, _ in stamp:
        h.update(f"{name}\0{_file_digest(folder / name)}\n".encode())
    return f"sha256:{h.hexdigest()[:24]}"


def folder_fingerprint(folder: Path) -> str:
    """The fingerprint of a model folder (recomputed only when a file's size or mtime changes)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    stamp = tuple((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _folder_fingerprint(folder, stamp)


def model_fingerprint(settings: Settings) -> str:
    cfg = settings.engine
    if cfg.kind == "vllm":
        path = settings.resolve_path(cfg.model)
        if path.is_dir():
            return folder_fingerprint(path)
    return f"name:{model_name(cfg)}" + (f"@{cfg.model_revision}" if cfg.model_revision else "")
