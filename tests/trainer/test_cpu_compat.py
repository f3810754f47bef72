"""trainer/cpu_compat.py: the pins on TRL's private helpers, and the torch tree attention against unpacked attention."""

from __future__ import annotations

import functools
import inspect
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from trl.experimental.async_grpo import async_grpo_trainer, packing
from trl.trainer import utils as trl_utils

from trainer import cpu_compat

# The fallback must also serve a GPU box without the Hub kernel: run the numeric checks on CUDA too when there is one.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ---------------------------------------------------------------------------------------------------------------------
# Pins: a TRL upgrade that changes any of these must fail here, not silently mis-train.
# ---------------------------------------------------------------------------------------------------------------------


def test_trl_version_is_the_one_we_pinned():
    import trl

    assert trl.__version__ == "1.16.0"


def test_packing_flash_attn_is_a_cached_zero_arg_loader_of_the_hub_kernel():
    # Read from the module source: another test in this process may already have replaced the live attribute.
    source = inspect.getsource(packing)
    assert "@cache\ndef _flash_attn():\n" in source
    assert 'return get_kernel("kernels-community/flash-attn3", version=1)' in source


def test_tree_attention_calls_flash_attn_varlen_func_the_way_our_fallback_implements():
    params = inspect.signature(packing.tree_attention).parameters
    assert list(params)[:5] == ["module", "query", "key", "value", "attention_mask"]
    for name in ("tree_kv_index", "tree_cu_seqlens_q", "tree_cu_seqlens_k", "tree_max_seqlen_q", "tree_max_seqlen_k"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    source = inspect.getsource(packing.tree_attention)
    # The module-global lookup is what makes patching `packing._flash_attn` effective.
    assert "_flash_attn().flash_attn_varlen_func(" in source
    # Every keyword it passes must be one our replacement implements.
    for keyword in ("softmax_scale=scaling", "causal=True", "window_size=", '"softcap"'):
        assert keyword in source
    ours = inspect.signature(cpu_compat.torch_flash_attn_varlen_func).parameters
    for name in ("softmax_scale", "causal", "window_size", "softcap"):
        assert name in ours
    assert packing.TREE_ATTENTION == "tree_fa3"


def test_trainer_calls_the_peak_flops_probe_by_module_global_name():
    assert list(inspect.signature(trl_utils.get_peak_flops_per_device).parameters) == ["accelerator", "dtype"]
    assert "torch.cuda.get_device_name" in inspect.getsource(trl_utils.get_peak_flops_per_device)
    init_source = inspect.getsource(async_grpo_trainer.AsyncGRPOTrainer.__init__)
    assert "self._peak_flops_per_device = get_peak_flops_per_device(self.accelerator, dtype)" in init_source
    # MFU is skipped, not crashed on, when the probe returns None.
    assert "if self._peak_flops_per_device is not None" in inspect.getsource(
        async_grpo_trainer.AsyncGRPOTrainer._log_step_metrics
    )


def test_trl_adapter_sync_decision_and_names_are_where_trl_adapter_sync_prefix_reads_them():
    trainer_cls = async_grpo_trainer.AsyncGRPOTrainer
    init_source = inspect.getsource(trainer_cls.__init__)
    assert "self._lora_sync = False" in init_source and 'self._lora_name = "trl-policy"' in init_source
    assert "self._lora_sync = lora_sync" in init_source
    # The adapter published at sync N is `{_lora_name}-v{N}` and N becomes model_version, which our worker reads.
    sync_source = inspect.getsource(trainer_cls._sync_weight_lora)
    assert 'load_lora_adapter(f"{self._lora_name}-v{version}", adapter_dir)' in sync_source
    assert "self.model_version = version" in sync_source
    assert "self.rollout_worker.update_model_version(self.model_version)" in sync_source

    class Decided:
        _lora_sync, _lora_name = True, "trl-policy"

    assert cpu_compat.trl_adapter_sync_prefix(Decided()) == "trl-policy"
    Decided._lora_sync = False
    assert cpu_compat.trl_adapter_sync_prefix(Decided()) is None


def test_tree_row_pack_yields_the_keys_tree_attention_consumes():
    row = packing.TreeRow()
    row.add(_sample([1, 2, 3, 4], group_id=0))
    row.add(_sample([1, 2, 5], group_id=0))
    packed = row.pack()
    assert {"tree_kv_index", "tree_cu_seqlens_q", "tree_cu_seqlens_k", "tree_max_seqlens", "position_ids"} <= set(
        packed
    )
    assert packed["tree_cu_seqlens_q"].dtype == torch.int32


# ---------------------------------------------------------------------------------------------------------------------
# Behaviour
# ---------------------------------------------------------------------------------------------------------------------


@functools.cache
def _hub_loader_without_kernels():
    """Stands in for TRL's unpatched `_flash_attn` (same shape: cached, zero-arg) where `kernels` is missing. Used
    because an earlier test in this process (any `build_trainer`) may have patched the real one already."""
    raise ImportError("No module named 'kernels'")


@pytest.fixture
def unpatched_trl(monkeypatch):
    """TRL's helpers as before any `apply_cpu_compat`; whatever the test patches is restored afterwards."""
    monkeypatch.setattr(packing, "_flash_attn", _hub_loader_without_kernels)
    monkeypatch.setattr(async_grpo_trainer, "get_peak_flops_per_device", trl_utils.get_peak_flops_per_device)


def test_apply_cpu_compat_patches_what_is_missing_and_is_idempotent(unpatched_trl):
    original_probe = async_grpo_trainer.get_peak_flops_per_device
    first = cpu_compat.apply_cpu_compat()
    if torch.cuda.is_available():
        # A GPU keeps TRL's own peak-FLOPs probe; attention falls back because the (stand-in) Hub kernel fails.
        assert first == [cpu_compat.PATCHED_FLASH_ATTN]
        assert async_grpo_trainer.get_peak_flops_per_device is original_probe
    else:
        assert first == [cpu_compat.PATCHED_FLASH_ATTN, cpu_compat.PATCHED_PEAK_FLOPS]
        assert async_grpo_trainer.get_peak_flops_per_device(None, "float32") is None
    assert packing._flash_attn() is cpu_compat.TORCH_FLASH_ATTN
    assert cpu_compat.apply_cpu_compat() == first
    with pytest.raises(ValueError, match="tree_attention must be one of auto, torch, kernel"):
        cpu_compat.apply_cpu_compat("fa9")


def test_kernel_mode_leaves_attention_alone(unpatched_trl):
    original = packing._flash_attn
    expected = [] if torch.cuda.is_available() else [cpu_compat.PATCHED_PEAK_FLOPS]
    assert cpu_compat.apply_cpu_compat("kernel") == expected
    assert packing._flash_attn is original


def _sample(ids, group_id):
    n = len(ids)
    mask = np.array([0] + [1] * (n - 1), dtype=np.int64)
    return {
        "input_ids": np.array(ids, dtype=np.int64),
        "completion_mask": mask,
        "old_log_probs": np.zeros(n, dtype=np.float32),
        "advantage": 1.0,
        "group_id": group_id,
        "metrics": {},
    }


def _random_tree_samples(rng: random.Random) -> list[list[int]]:
    """Samples with shared prompts, forks after shared turns, and an unrelated chain: several tree rows' worth."""
    prompt_a = [rng.randrange(100) for _ in range(rng.randint(3, 9))]
    prompt_b = [rng.randrange(100) for _ in range(rng.randint(2, 6))]
    samples = []
    for _ in range(3):
        samples.append(prompt_a + [rng.randrange(100) for _ in range(rng.randint(1, 7))])
    shared_turn = prompt_a + [rng.randrange(100) for _ in range(5)]
    samples += [shared_turn + [rng.randrange(100) for _ in range(rng.randint(1, 4))] for _ in range(2)]
    samples += [prompt_b + [rng.randrange(100) for _ in range(rng.randint(1, 5))] for _ in range(2)]
    samples.append([rng.randrange(100) for _ in range(rng.randint(1, 3))])  # short unrelated chain
    return samples


def _sample_paths(packed, samples):
    """Packed positions of each sample's tokens: the K/V path of the segment the sample ends on."""
    kv, cu_k = packed["tree_kv_index"].tolist(), packed["tree_cu_seqlens_k"].tolist()
    input_ids = packed["input_ids"].tolist()
    paths = []
    for ids in samples:
        for s in range(len(cu_k) - 1):
            path = kv[cu_k[s] : cu_k[s + 1]]
            if len(path) == len(ids) and [input_ids[p] for p in path] == ids:
                paths.append(path)
                break
        else:
            raise AssertionError(f"no segment ends sample {ids}")
    return paths


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 2), (2, 2)])
def test_torch_tree_attention_equals_unpacked_sdpa(seed, heads, kv_heads, device):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    samples = _random_tree_samples(rng)
    row = packing.TreeRow()
    for i, ids in enumerate(samples):
        row.add(_sample(ids, group_id=i % 2))
    packed = row.pack()
    n, dim = len(packed["input_ids"]), 16
    assert n < sum(map(len, samples)), "the samples must share prefixes for this test to mean anything"
    q, k, v = (torch.randn(n, h, dim).to(device) for h in (heads, kv_heads, kv_heads))
    kv_index = packed["tree_kv_index"].to(device)

    out = cpu_compat.torch_flash_attn_varlen_func(
        q,
        k.index_select(0, kv_index),
        v.index_select(0, kv_index),
        packed["tree_cu_seqlens_q"].to(device),
        packed["tree_cu_seqlens_k"].to(device),
        *packed["tree_max_seqlens"].tolist(),
        softmax_scale=dim**-0.5,
        causal=True,
        window_size=(-1, -1),
    )
    assert out.shape == q.shape
    for path in _sample_paths(packed, samples):
        index = torch.tensor(path, device=device)
        reference = F.scaled_dot_product_attention(
            q[index].transpose(0, 1),
            k[index].transpose(0, 1),
            v[index].transpose(0, 1),
            is_causal=True,
            enable_gqa=heads != kv_heads,
        ).transpose(0, 1)
        torch.testing.assert_close(out[index], reference, atol=1e-5, rtol=0)


def test_sliding_window_and_softcap_match_eager_reference():
    torch.manual_seed(3)
    n_q, n_k, heads, dim, window, cap = 4, 9, 2, 8, 3, 5.0
    q, k, v = torch.randn(n_q, heads, dim), torch.randn(n_k, heads, dim), torch.randn(n_k, heads, dim)
    cu_q, cu_k = torch.tensor([0, n_q], dtype=torch.int32), torch.tensor([0, n_k], dtype=torch.int32)
    out = cpu_compat.torch_flash_attn_varlen_func(
        q, k, v, cu_q, cu_k, n_q, n_k, causal=True, window_size=(window - 1, 0), softcap=cap
    )
    scores = torch.einsum("qhd,khd->hqk", q, k) * dim**-0.5
    scores = cap * torch.tanh(scores / cap)
    query_pos = torch.arange(n_q)[:, None] + n_k - n_q
    key_pos = torch.arange(n_k)[None, :]
    allowed = (key_pos <= query_pos) & (key_pos > query_pos - window)
    reference = torch.einsum("hqk,khd->qhd", scores.masked_fill(~allowed, float("-inf")).softmax(-1), v)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)


def test_unsupported_keyword_is_a_clear_error():
    x = torch.randn(2, 1, 4)
    cu = torch.tensor([0, 2], dtype=torch.int32)
    with pytest.raises(NotImplementedError, match="dropout_p"):
        cpu_compat.torch_flash_attn_varlen_func(x, x, x, cu, cu, 2, 2, causal=True, dropout_p=0.1)


def _tiny_qwen3_config():
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=256, tie_word_embeddings=True,
    )  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
def test_tiny_qwen3_forward_through_trl_tree_attention_equals_unpacked(unpatched_trl, device):
    """The whole model path: TRL's registered `tree_fa3` attention (with our fallback) vs plain SDPA per sequence."""
    from transformers import Qwen3ForCausalLM

    cpu_compat.apply_cpu_compat()
    packing.register_tree_attention()
    config = _tiny_qwen3_config()
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config).eval().to(device)
    rng = random.Random(7)
    samples = _random_tree_samples(rng)
    row = packing.TreeRow()
    for i, ids in enumerate(samples):
        row.add(_sample(ids, group_id=0))
    packed = row.pack()

    with torch.no_grad():
        model.set_attn_implementation(packing.TREE_ATTENTION)
        tree_logits = model(
            input_ids=packed["input_ids"][None].to(device),
            position_ids=packed["position_ids"][None].to(device),
            tree_kv_index=packed["tree_kv_index"].to(device),
            tree_cu_seqlens_q=packed["tree_cu_seqlens_q"].to(device),
            tree_cu_seqlens_k=packed["tree_cu_seqlens_k"].to(device),
            tree_max_seqlen_q=int(packed["tree_max_seqlens"][0]),
            tree_max_seqlen_k=int(packed["tree_max_seqlens"][1]),
        ).logits[0]
        model.set_attn_implementation("sdpa")
        for ids, path in zip(samples, _sample_paths(packed, samples), strict=True):
            plain = model(input_ids=torch.tensor([ids], device=device)).logits[0]
            torch.testing.assert_close(
                tree_logits[torch.tensor(path, device=device)].log_softmax(-1), plain.log_softmax(-1), atol=1e-5, rtol=0
            )


@pytest.mark.parametrize("device", DEVICES)
def test_policy_gradient_through_tree_packing_equals_unpacked(unpatched_trl, device):
    """The update itself, not just the forward: TRL's packed GRPO loss (tree attention with our fallback, fused LM head,
    token_index / advantages from `TreeRow.pack`) gives every parameter the gradient of the same loss computed sample
    by sample with plain SDPA."""
    from transformers import Qwen3ForCausalLM

    cpu_compat.apply_cpu_compat()
    packing.register_tree_attention()
    config = _tiny_qwen3_config()
    torch.manual_seed(0)
    tree_model = Qwen3ForCausalLM(config).to(device)
    plain_model = Qwen3ForCausalLM(config).to(device)
    plain_model.load_state_dict(tree_model.state_dict())
    trl_utils.add_fused_lm_head(tree_model, temperature=0.7, outputs=("log_probs", "entropy"))

    rng = random.Random(11)
    prompt = [rng.randrange(128) for _ in range(9)]  # one GRPO group: a shared prompt, completions of varied length
    completions = [[rng.randrange(128) for _ in range(rng.randint(2, 6))] for _ in range(6)]
    advantages = [rng.uniform(-1.5, 1.5) for _ in completions]
    row = packing.TreeRow()
    for comp, adv in zip(completions, advantages, strict=True):
        row.add({"input_ids": np.array(prompt + comp), "completion_mask": np.array([0] * len(prompt) + [1] * len(comp)),
                 "old_log_probs": np.zeros(len(prompt) + len(comp), dtype=np.float32), "advantage": adv,
                 "group_id": 0, "metrics": {}})
    packed = {k: v.to(device) if torch.is_tensor(v) else v for k, v in row.pack().items()}
    assert len(packed["input_ids"]) < sum(len(prompt) + len(c) for c in completions), "the prompt must be shared"

    tree_model.set_attn_implementation(packing.TREE_ATTENTION)
    out = tree_model(
        input_ids=packed["input_ids"][None], position_ids=packed["position_ids"][None],
        shift_labels=packed["shift_labels"][None], fused_lm_head=True,
        tree_kv_index=packed["tree_kv_index"], tree_cu_seqlens_q=packed["tree_cu_seqlens_q"],
        tree_cu_seqlens_k=packed["tree_cu_seqlens_k"], tree_max_seqlen_q=int(packed["tree_max_seqlens"][0]),
        tree_max_seqlen_k=int(packed["tree_max_seqlens"][1]),
    )  # fmt: skip
    log_probs = out.log_probs.flatten()[packed["token_index"]]
    # TRL's on-policy GRPO loss: -sum(A * ratio) / trained tokens, with ratio = exp(logp - old) and old = logp here.
    loss = -(packed["advantages"] * torch.exp(log_probs - log_probs.detach())).sum() / len(log_probs)
    loss.backward()

    plain_model.set_attn_implementation("sdpa")
    n_tokens, plain_loss, plain_log_probs = sum(map(len, completions)), 0.0, []
    for comp, adv in zip(completions, advantages, strict=True):
        ids = torch.tensor([prompt + comp], device=device)
        logp = (plain_model(input_ids=ids).logits[0, :-1].float() / 0.7).log_softmax(-1)
        lp = logp.gather(1, ids[0, 1:, None])[len(prompt) - 1 :, 0]
        plain_log_probs.append(lp.detach())
        plain_loss = plain_loss - (adv * torch.exp(lp - lp.detach())).sum() / n_tokens
    plain_loss.backward()

    torch.testing.assert_close(log_probs.detach(), torch.cat(plain_log_probs), atol=1e-5, rtol=0)
    plain_grads = dict(plain_model.named_parameters())
    for name, param in tree_model.named_parameters():
        assert param.grad is not None and plain_grads[name].grad is not None, name
        assert param.grad.abs().max() > 0, f"{name} got no gradient"
        torch.testing.assert_close(param.grad, plain_grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)
