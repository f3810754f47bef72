"""Token exactness of recorded rollouts (`rollouts.jsonl` of `train`, or `intercept-rl rollouts --out`) against a
teacher-forced float32 forward of the weights that sampled them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer


def tool_output_spans(ids: list[int], open_id: int, close_id: int) -> list[tuple[int, int]]:
    """(start, end) of every `<tool_response> … </tool_response>` in a row, markers included."""
    spans, start = [], None
    for i, token in enumerate(ids):
        if token == open_id:
            start = i
        elif token == close_id and start is not None:
            spans.append((start, i + 1))
            start = None
    return spans


def teacher_forced_at(model, ids: list[int], mask: np.ndarray, temperature: float) -> np.ndarray:
    """Log-probs of ids[p] given ids[:p], only where mask[p] (the LM head on a 16k-token row would be 9 GB)."""
    t = torch.tensor([ids])
    out = np.zeros(len(ids))
    positions = np.nonzero(mask)[0]
    with torch.no_grad():
        hidden = model.model(t).last_hidden_state[0]
        logits = model.lm_head(hidden[torch.tensor(positions - 1)]).float() / temperature
        logp = torch.log_softmax(logits, dim=-1)
        out[positions] = logp.gather(1, t[0, torch.tensor(positions), None])[:, 0].numpy()
    return out


def check_token_exact(records: list[dict], weights_of: Callable[[int], Path], tolerance: float,
                      temperature: float = 1.0) -> dict:
    """Assert on every row of `records`: every sampled token is trained, `old_log_probs` equal the teacher-forced
    log-probs of the weights of the version that sampled the row (`weights_of(version)`) within `tolerance`, and no
    token of a tool output (`<tool_response>` span) is trained. Returns counts of what was checked, and the lowest
    sampled log-prob (a policy that samples with certainty makes the comparison close to vacuous)."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_qwen3_tokenizer()
    open_id, close_id = tokenizer.convert_tokens_to_ids(["<tool_response>", "</tool_response>"])
    models: dict[int, torch.nn.Module] = {}
    checked = {"rows": 0, "multi_turn_rows": 0, "tool_outputs": 0, "sampled": 0, "max_diff": 0.0, "versions": [],
               "min_logprob": 0.0}
    for rec in records:
        assert rec["drift"]["trained_tokens"] == rec["drift"]["sampled_tokens"] > 0, rec["drift"]
        for row in rec["rows"]:
            versions = set(row["model_versions"])
            assert len(versions) == 1, versions  # one policy per row (max_staleness 0 aborts rollouts that outlive it)
            version = versions.pop()
            if version not in models:
                models[version] = AutoModelForCausalLM.from_pretrained(weights_of(version),
                                                                       dtype=torch.float32).eval()
            ids, mask = row["input_ids"], np.array(row["completion_mask"], dtype=bool)
            ref = teacher_forced_at(models[version], ids, mask, temperature)
            got = np.array(row["old_log_probs"])
            worst = float(np.abs(got[mask] - ref[mask]).max())
            assert worst < tolerance, (rec["rollout_id"], version, worst)  # a misplaced token or mask is O(0.1)
            checked["max_diff"] = max(checked["max_diff"], worst)
            checked["min_logprob"] = min(checked["min_logprob"], float(got[mask].min()))
            assert np.all(got[~mask] == 0.0)
            spans = tool_output_spans(ids, open_id, close_id)
            assert all(not mask[a:b].any() for a, b in spans)  # tool outputs are context, never trained
            runs = np.count_nonzero(np.diff(np.concatenate([[0], mask.astype(int)])) == 1)
            checked["rows"] += 1
            checked["multi_turn_rows"] += int(runs >= 2 and len(spans) >= 1)
            checked["tool_outputs"] += len(spans)
            checked["sampled"] += int(mask.sum())
    checked["versions"] = sorted(models)
    return checked
