"""Multi-dimensional, cost-effective quality assessment (docs/quality.md).

``rules`` (free, every record) -> ``grounding`` (cheap, every record) -> ``judge`` (an LLM, only
records in doubt plus an audit sample) -> ``scoring`` (aggregation, cost accounting) ->
``gates`` (Great Expectations row and batch suites).
"""

from __future__ import annotations

# row-gate reason code of each dimension: what a person reads in rejected/ to act on it
REASON_CODES = {
    "schema_valid": "schema_invalid",
    "non_empty": "empty_output",
    "not_truncated": "truncated",
    "length_ok": "length_out_of_bounds",
    "lang_match": "wrong_language",
    "repetition": "repetitive",
    "copy": "copies_dialogue",
    "echo": "echoes_instruction",
    "refusal": "refusal_or_boilerplate",
    "pii_leak": "pii_leak",
    "task_form": "off_task",
    "grounding": "ungrounded",
    "coverage": "incomplete",
    "judge_faithfulness": "judge_unfaithful",
    "judge_completeness": "judge_incomplete",
    "judge_instruction_following": "judge_off_instruction",
    "judge_fluency": "judge_disfluent",
}
