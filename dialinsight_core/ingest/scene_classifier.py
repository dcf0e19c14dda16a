"""Optional LLM scene classifier, run after ingest (``ingest.llm_scene_classifier``).

Keyword matching leaves some dialogues at the taxonomy's default scene; this asks an LLM, through
the engine interface with a JSON-schema reply (one of the taxonomy's scenes), for those alone.
The run layer decides whether it runs and which engine it gets (``ingest.llm_classifier_engine``).
"""

from __future__ import annotations

import json
from collections import Counter

from dialinsight_core import schemas
from dialinsight_core.config import Settings
from dialinsight_core.contracts import IngestStats
from dialinsight_core.ingest import IngestResult
from dialinsight_core.llm import Engine, LabelRequest
from dialinsight_core.templating import get_template
from dialinsight_core.text import prompt_lang, turn_lines


def classify_scenes_llm(result: IngestResult, engine: Engine, settings: Settings) -> IngestResult:
    """Revisit dialogues left at the default scene with an LLM (structured output: one of the
    taxonomy's scenes). A failed or invalid reply keeps the default scene, marked ``llm_failed``."""
    dialogues = result.dialogues.to_pylist()
    todo = [d for d in dialogues if d["scene_source"] == "default"]
    stats = {"asked": len(todo), "changed": 0, "kept_default": 0, "failed": 0}
    if not todo:
        return IngestResult(result.turns, result.dialogues, result.quarantined,
                            {**result.stats, "llm_scene_classifier": stats}, result.index)
    tpl = get_template("scene_classifier.j2")
    text_by = turn_lines(result.turns.select(["dialogue_id", "role", "text"]).to_pylist())
    reqs, allowed = [], {}
    for d in todo:  # each dialogue picks among its own domain's scenes, in its domain's words
        domain = settings.domain_of(d["source"])
        scene_defs, _ = settings.scenes_of(settings.domain_name_of(d["source"]))
        scenes = list(scene_defs)
        allowed[d["dialogue_id"]] = scenes
        schema = {"type": "object", "properties": {"scene": {"type": "string", "enum": scenes}}, "required": ["scene"],
                  "additionalProperties": False}
        lang = prompt_lang(d["lang"])
        reqs.append(LabelRequest(d["dialogue_id"], [{"role": "user", "content": tpl.render(
            lang=lang, domain=domain.name[lang], role_names=domain.role_names[lang],
            dialogue="\n".join(text_by.get(d["dialogue_id"], []))[:4000],
            scenes=[(n, scene_defs[n].description) for n in scenes])}], schema))
    answers = {}
    for req, res in zip(reqs, engine.generate(reqs), strict=True):
        try:
            scene = json.loads(res.output_text or "")["scene"] if not res.error_code else None
        except (json.JSONDecodeError, TypeError, KeyError):
            scene = None
        answers[req.prompt_id] = scene if scene in allowed[req.prompt_id] else None
    new_scene: dict[str, str] = {}
    for d in dialogues:
        if d["dialogue_id"] not in answers:
            continue
        scene = answers[d["dialogue_id"]]
        if scene is None:
            d["scene_source"] = "llm_failed"
            stats["failed"] += 1
            continue
        d["scene_source"] = "llm"
        stats["changed" if scene != d["scene"] else "kept_default"] += 1
        d["scene"] = new_scene[d["dialogue_id"]] = scene
    turns = result.turns.to_pylist()
    for t in turns:
        t["scene"] = new_scene.get(t["dialogue_id"], t["scene"])
    st: IngestStats = {**result.stats, "llm_scene_classifier": stats,
                       "scenes": dict(Counter(d["scene"] for d in dialogues)),
                       "scene_sources": dict(Counter(d["scene_source"] for d in dialogues))}
    return IngestResult(schemas.table(schemas.TURNS, turns), schemas.table(schemas.DIALOGUES, dialogues),
                        result.quarantined, st, result.index)
