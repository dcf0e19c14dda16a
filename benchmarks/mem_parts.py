"""Where a stage's memory goes: run one ``scale_bench`` stage in this process while a thread reads,
every 0.2 s, the process's RSS (anonymous / file-backed), pyarrow's allocated bytes, glibc malloc's
bytes in use, free-but-kept and mmapped (``mallinfo2``), and at each new RSS peak pymalloc's arenas
and the main thread's stack. For the gate it also prints, after each GX run, the RSS and what GX's
ephemeral context keeps of the validation results.

    .venv/bin/python benchmarks/mem_parts.py publish build/scale/n1000000 --out build/mem_publish.json

Run it on a work folder that ``scale_bench.py`` filled (for publish: remove ``store/snapshots`` and
``store/dedup`` first). The sampling costs a little time; the figures to quote for speed are
``scale_bench.py``'s. docs/benchmarks.md ("Gate and publish memory, part by part") reads its output.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import pickle
import re
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo() -> _MallInfo2:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2()


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) >> 10
    return out


def _pymalloc_arenas() -> int:
    """pymalloc's arenas now (1 MiB each on 3.11), from ``sys._debugmallocstats`` (it writes to fd 2)."""
    fd, path = tempfile.mkstemp()
    saved = os.dup(2)
    os.dup2(fd, 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
    text = Path(path).read_text()
    os.unlink(path)
    m = re.search(r"# arenas allocated current\s*=\s*([\d,]+)", text)
    return int(m.group(1).replace(",", "")) if m else -1


def sample() -> dict[str, int]:
    """MiB: RSS parts, pyarrow's live bytes, glibc's in use / free but kept / mmapped."""
    import pyarrow as pa

    mi = _mallinfo()
    return {**_status(), "arrow": pa.total_allocated_bytes() >> 20, "glibc_used": mi.uordblks >> 20,
            "glibc_free": mi.fordblks >> 20, "glibc_mmap": mi.hblkhd >> 20}


def _probe_gate_parts(log: list[dict[str, Any]], t0: float) -> None:
    from dialinsight_core.quality import gates

    run = gates._Suites._run

    def probed(self: Any, cp: Any, part: int | None, **kw: Any) -> Any:
        res = run(self, cp, part, **kw)
        kept = self.ctx.validation_results_store._store_backend._store  # the ephemeral context's results
        size = sum(len(pickle.dumps(v)) for v in kept.values())
        log.append({"t": round(time.perf_counter() - t0, 1), "part": part, "rss": _status()["VmRSS"],
                    "gx_results": len(kept), "gx_results_mib": round(size / 2**20, 1)})
        return res

    gates._Suites._run = probed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage")
    ap.add_argument("work", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from benchmarks import scale_bench

    main_id = threading.get_ident()
    peaks: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    gate_parts: list[dict[str, Any]] = []
    done = threading.Event()
    t0 = time.perf_counter()
    if args.stage == "gate":
        _probe_gate_parts(gate_parts, t0)

    def watch() -> None:
        best, last = 0, -10.0
        while not done.is_set():
            s, t = sample(), round(time.perf_counter() - t0, 1)
            if t - last >= 2.0:
                series.append({"t": t, **s})
                last = t
            if s["VmRSS"] > best + 10:
                best = s["VmRSS"]
                frame = sys._current_frames().get(main_id)
                stack = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in traceback.extract_stack(frame)][-12:] \
                    if frame else []
                peaks.append({"t": t, **s, "pymalloc_arenas": _pymalloc_arenas(), "stack": stack})
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    result = scale_bench.run_stage(args.stage, args.work, True)
    done.set()
    thread.join()
    if args.out:
        args.out.write_text(json.dumps({"result": result, "peaks": peaks, "series": series, "gate_parts": gate_parts}))
    print(json.dumps(result))
    for row in gate_parts:
        print(json.dumps(row))
    for p in peaks[-6:]:
        print({k: v for k, v in p.items() if k != "stack"})
        print("    " + "\n    ".join(p["stack"][-5:]))


if __name__ == "__main__":
    main()
