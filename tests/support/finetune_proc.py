"""A fine-tune in its own process, as the evaluate DAG's ``model`` task runs it (killed by tests).

    python -m tests.support.finetune_proc SPEC.json

SPEC: store (URI), prefix, model, rows (list of chats), finetune (FinetuneSettings fields), out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dialinsight_core.config import FinetuneSettings
from dialinsight_core.evaluate.finetune import finetune
from dialinsight_core.storage import open_store

if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    _, _, result = finetune(spec["rows"], spec["model"], FinetuneSettings(**spec["finetune"]), open_store(spec["store"]),
                            spec["prefix"], "proc")
    Path(spec["out"]).write_text(json.dumps(result.as_dict()))
