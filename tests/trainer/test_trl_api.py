"""`intercept_common.trl_api` is the only product module that imports TRL, and every name it hands out is pinned.

A TRL upgrade should fail here first: a name that moved fails its lookup, a private helper whose signature changed
fails its pin. Deeper pins on what `trainer.cpu_compat` patches live in test_cpu_compat.py. This file imports TRL
directly only to compare against it.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from intercept_common import trl_api
from tests.paths import REPO

ADAPTER = REPO / "intercept_common" / "trl_api.py"
# Every product package, plus the scripts that run beside them; tests may import TRL directly to pin its behaviour.
SCANNED = ("control_plane", "rollout_worker", "trainer", "local_engine", "intercept_common", "doctor", "space_app",
           "gpu", "bench", "scripts")


def trl_import_lines(source: str) -> list[int]:
    """The lines of `source` that import `trl` or a submodule: `import`, `from … import`, anywhere (functions
    included), and `importlib.import_module("trl…")` / `__import__("trl…")` with a literal name."""
    def is_trl(name: str | None) -> bool:
        return name is not None and (name == "trl" or name.startswith("trl."))

    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(is_trl(alias.name) for alias in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and is_trl(node.module):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str) \
                    and is_trl(node.args[0].value):
                lines.append(node.lineno)
    return sorted(lines)


def scanned_files() -> list[Path]:
    """Our Python files, less the data directories ruff also skips (embedded task repositories)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    data_dirs = [REPO / d for d in pyproject["tool"]["ruff"].get("extend-exclude", [])]
    files = [*REPO.glob("*.py")]
    for root in SCANNED:
        files += (REPO / root).rglob("*.py")
    return sorted(f for f in files if not any(f.is_relative_to(d) for d in data_dirs))


def test_only_the_adapter_imports_trl():
    files = scanned_files()
    assert ADAPTER in files and len(files) > 100  # the scan sees the tree, not an empty glob
    offenders = [f"{path.relative_to(REPO)}:{line}" for path in files if path != ADAPTER
                 for line in trl_import_lines(path.read_text(encoding="utf-8"))]
    assert offenders == [], "import TRL names from intercept_common.trl_api only (design §4): " + ", ".join(offenders)


def test_the_scan_catches_every_form_of_importing_trl():
    source = '''
import trl
import os, trl.experimental as x
from trl.experimental.async_grpo import AsyncGRPOTrainer
def later():
    from trl.chat_template_utils import parse_response
    importlib.import_module("trl.trainer.utils")
    __import__("trl")
import trlx
from trainer import trl
from . import trl
from intercept_common.trl_api import packing
importlib.import_module("trlx")
'''
    assert trl_import_lines(source) == [2, 3, 4, 6, 7, 8]


def test_importing_the_adapter_the_gate_or_the_worker_loads_no_trl_trainer():
    probe = ("import sys, intercept_common.trl_api; assert not [m for m in sys.modules if m.startswith('trl')]; "
             "import control_plane, rollout_worker.worker; "
             "print(sorted(m for m in sys.modules if m.startswith('trl.experimental')))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_public_names_are_public_api():
    for name, (module, attribute) in trl_api.PUBLIC.items():
        assert not module.startswith(("trl.experimental", "trl.trainer.utils")), name
        assert attribute is not None and not attribute.startswith("_"), name
    assert not set(trl_api.PUBLIC) & set(trl_api.PRIVATE)


def params(func) -> list[str]:
    return list(inspect.signature(func).parameters)


def field_names(cls) -> list[str]:
    assert dataclasses.is_dataclass(cls), cls
    return [f.name for f in dataclasses.fields(cls)]


def pin_async_grpo_trainer(cls):
    # the keywords trainer/train_swe_async_grpo.build_trainer passes (the injection points move in TRL 1.18)
    assert {"model", "args", "train_dataset", "processing_class", "peft_config", "rollout_worker", "weight_transfer",
            "callbacks"} <= set(params(cls.__init__))


def pin_async_grpo_config(cls):
    # what the worker takes from TRL's config rather than its own (trainer.config.WORKER_FIELDS_FROM_TRL) and what
    # the trainer sets on it
    assert {"num_generations", "temperature", "top_p", "top_k", "max_staleness", "seed", "queue_maxsize",
            "token_budget", "vllm_server_base_url", "max_completion_length"} <= set(field_names(cls))


def pin_packing(module):
    assert module.TREE_ATTENTION == "tree_fa3"
    assert params(module.register_tree_attention) == [] and params(module._flash_attn) == []
    assert params(module.TreeRow) == [] and params(module.TreeRow.add) == ["self", "sample"]
    assert params(module.TreeRow.fits) == ["self", "sample", "budget"] and params(module.TreeRow.pack) == ["self"]


def pin_async_grpo_trainer_module(module):
    from trl.experimental.async_grpo import AsyncGRPOTrainer

    # cpu_compat replaces this module global, which the trainer's __init__ calls
    assert params(module.get_peak_flops_per_device) == ["accelerator", "dtype"]
    assert module.AsyncGRPOTrainer is AsyncGRPOTrainer


def pin_round_lora_rank(func):
    assert params(func) == ["adapter_rank"]
    assert [func(r) for r in (8, 16, 17, 64)] == [8, 16, 32, 64]  # up to a rank vLLM accepts for --max-lora-rank


# name -> what the project relies on; every name the adapter exposes needs one (test below)
PINS = {
    "TrlParser": lambda cls: issubclass(cls, argparse.ArgumentParser) and all(
        callable(getattr(cls, m)) for m in ("parse_args_into_dataclasses", "set_defaults")),
    "get_training_chat_template": lambda f: params(f)[0] == "processing_class",
    "is_chat_template_prefix_preserving": lambda f: params(f) == ["processing_class"],
    "add_response_schema": lambda f: params(f) == ["processing_class"],
    "parse_response": lambda f: params(f) == ["tokenizer", "ids", "prefix", "tools"],
    "AsyncGRPOTrainer": pin_async_grpo_trainer,
    "AsyncGRPOConfig": pin_async_grpo_config,
    # design §4 lists the fields and types the worker fills in
    "RolloutSample": lambda cls: field_names(cls) == [
        "prompt", "completion", "input_ids", "completion_mask", "old_log_probs", "advantage", "model_version",
        "group_id", "metrics", "enqueued_at"],
    "log_rollout_traces": lambda f: params(f) == ["samples", "step", "report_to", "max_traces"],
    "round_lora_rank": pin_round_lora_rank,
    "packing": pin_packing,
    "async_grpo_trainer": pin_async_grpo_trainer_module,
    "qwen3_chat_template": lambda text: isinstance(text, str) and "<|im_start|>" in text,
    "add_fused_lm_head": lambda f: {"model", "temperature", "outputs"} <= set(params(f)),
    "compute_flops_per_token": lambda f: params(f) == ["config", "seq_len"],
    "compute_mfu": lambda f: params(f) == ["flops_per_token", "tokens_per_second", "world_size",
                                           "peak_flops_per_device"],
    "get_peak_flops": lambda f: params(f) == ["device_name", "dtype"],
}


def test_every_exposed_name_has_a_pin():
    assert sorted(PINS) == trl_api.__all__


@pytest.mark.parametrize("name", sorted(PINS))
def test_exposed_name_exists_in_installed_trl_as_the_project_uses_it(name):
    value = getattr(trl_api, name)  # an AttributeError / ImportError here: TRL moved the name
    assert PINS[name](value) is not False, f"{name}: {trl_api.NAMES[name]} no longer matches what we rely on"


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        trl_api.no_such_name  # noqa: B018
