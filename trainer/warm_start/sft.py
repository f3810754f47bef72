"""The supervised warm start: the embedded architecture fine-tuned on recorded rollout rows, loss on sampled tokens.

The rows are exactly what the worker recorded (`intercept-rl rollouts` records: `input_ids`, `completion_mask`), so
the model learns to continue the very token sequences mini-swe-agent and the gate produce, prompt rendering and
tool-output framing included. Loss is next-token cross-entropy at positions where `completion_mask` is 1 (what the
policy itself sampled); prompts and tool outputs are context only.

Deterministic for a seed: fixed init (the embedded recipe's seed), rows in a canonical order, a seeded shuffle per
epoch, one torch thread (thread count changes float reduction order on CPU).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class SftConfig:
    steps: int = 720  # rows seen (batch of one row)
    lr: float = 1e-2
    weight_decay: float = 0.0
    warmup_steps: int = 10
    seed: int = 0
    max_len: int = 4096


def load_rows(paths: list[Path], *, resolved_only: bool = True) -> list[dict]:
    """Rows (input_ids, completion_mask) of the records in `paths`, canonically ordered (record order is not)."""
    rows = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            record = json.loads(line)
            if resolved_only and not record.get("resolved"):
                continue
            for row in record["rows"]:
                if sum(row["completion_mask"]):
                    rows.append({"input_ids": list(row["input_ids"]), "completion_mask": list(row["completion_mask"])})
    rows.sort(key=lambda r: (len(r["input_ids"]), r["input_ids"]))
    return rows


def completion_loss(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ids[p] given ids[:p] over positions p where mask[p]; the LM head runs there only
    (152k-way logits on every prompt position would cost ~5x the whole rest of the step)."""
    positions = torch.nonzero(mask[1:]).squeeze(1) + 1
    hidden = model.model(ids[None]).last_hidden_state[0]
    logits = model.lm_head(hidden[positions - 1]).float()
    return torch.nn.functional.cross_entropy(logits, ids[positions])


def fine_tune(model, rows: list[dict], config: SftConfig, log=print) -> list[float]:
    """Train `model` in place for `config.steps` rows; returns the loss of every step."""
    if not rows:
        raise ValueError("no training rows: the warm-start data holds no resolved rollout with sampled tokens")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            order = random.Random(config.seed)
            optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps))
                * max(0.0, 1 - s / max(1, config.steps)))
            model.train()
            losses, epoch = [], []
            for step in range(config.steps):
                if not epoch:
                    epoch = list(range(len(rows)))
                    order.shuffle(epoch)
                row = rows[epoch.pop()]
                ids = torch.tensor(row["input_ids"][: config.max_len])
                mask = torch.tensor(row["completion_mask"][: config.max_len], dtype=torch.bool)
                loss = completion_loss(model, ids, mask)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
                if (step + 1) % 20 == 0 or step + 1 == config.steps:
                    window = losses[-20:]
                    log(f"warm start step {step + 1}/{config.steps}: loss {sum(window) / len(window):.3f}")
            model.eval()
            return losses
    finally:
        torch.set_num_threads(threads)
