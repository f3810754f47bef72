"""The local engine over real HTTP on loopback, with the real tiny Qwen3 (fp32) and the real Qwen3 tokenizer.

Proves: vLLM's response shapes field by field, logprobs equal to a teacher-forced forward (within 1e-5, batched
requests of different lengths included), sampling semantics (greedy, seeds, top-k/top-p, stops), vLLM's
context-length 400, clear 400s for bad input, pause/resume, and weight pushes (applied, validated, atomic).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import aiohttp
import pytest
import requests
import torch
from safetensors.torch import save as save_safetensors
from transformers import AutoModelForCausalLM

from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer
from local_engine.background import BackgroundEngine
from local_engine.cli import create_engine_server
from local_engine.client import get_weights_version, push_weights
from local_engine.sampling import SamplingParams
from local_engine.server import EngineConfig

MAX_MODEL_LEN = 512
TOL = 1e-5


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def _engine(tiny_model_dir, **overrides) -> BackgroundEngine:
    config = EngineConfig(model=str(tiny_model_dir), served_model_name="policy", max_model_len=MAX_MODEL_LEN, **overrides)
    return BackgroundEngine(create_engine_server(config))


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    with _engine(tiny_model_dir) as background:
        yield background


def _complete(engine, **body):
    body.setdefault("model", "policy")
    return requests.post(f"{engine.url}/v1/completions", json=body, timeout=120)


def _prompt(n, offset=0):
    tokenizer = load_qwen3_tokenizer()
    text = " ".join(f"word{i + offset}" for i in range(n))
    return tokenizer(text)["input_ids"][:n]


def _teacher_forced(reference, prompt_ids, completion_ids, temperature=1.0, top_k=0):
    """Logprob of each completion token under one unbatched, cache-free forward of prompt + completion."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = reference(ids).logits[0, len(prompt_ids) - 1 : -1].float()
    if temperature > 0:
        logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(1, torch.tensor(completion_ids)[:, None])[:, 0].tolist()


def _max_error(a, b):
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b))


# ---- shapes ---------------------------------------------------------------------------------------------------------
def test_introspection_endpoints_match_vllm_shapes(engine):
    assert requests.get(f"{engine.url}/health", timeout=10).status_code == 200
    models = requests.get(f"{engine.url}/v1/models", timeout=10).json()
    assert models["object"] == "list" and len(models["data"]) == 1
    card = models["data"][0]
    assert card["id"] == "policy" and card["object"] == "model" and card["owned_by"] == "vllm"
    assert card["max_model_len"] == MAX_MODEL_LEN and isinstance(card["created"], int)
    info = requests.get(f"{engine.url}/server_info", params={"config_format": "json"}, timeout=10).json()
    # What TRL reads: VLLMClient.get_dtype and select_adapter_sync.
    assert info["vllm_config"]["model_config"]["dtype"] == "torch.float32"
    assert info["vllm_config"]["lora_config"] is None
    assert info["vllm_config"]["parallel_config"]["data_parallel_size"] == 1
    assert requests.get(f"{engine.url}/get_world_size", timeout=10).json() == {"world_size": 1}
    assert requests.get(f"{engine.url}/weights_version", timeout=10).json() == {"version": 0}


def test_completion_response_fields(engine):
    prompt = _prompt(9)
    response = _complete(engine, prompt=prompt, max_tokens=6, temperature=1.0, logprobs=2, return_token_ids=True,
                         seed=7)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"id", "object", "created", "model", "choices", "usage"}
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion" and body["model"] == "policy"
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert set(choice) >= {"index", "text", "logprobs", "finish_reason", "stop_reason", "token_ids",
                           "prompt_token_ids", "prompt_logprobs"}
    assert choice["index"] == 0 and choice["finish_reason"] == "length" and choice["stop_reason"] is None
    assert choice["prompt_token_ids"] == prompt and len(choice["token_ids"]) == 6
    assert choice["text"] == load_qwen3_tokenizer().decode(choice["token_ids"], skip_special_tokens=True)
    block = choice["logprobs"]
    assert set(block) == {"text_offset", "token_logprobs", "tokens", "top_logprobs"}
    assert len(block["token_logprobs"]) == len(block["tokens"]) == len(block["top_logprobs"]) == 6
    assert all(isinstance(v, float) and v <= 0 for v in block["token_logprobs"])
    assert block["text_offset"][0] == 0
    for i in range(1, 6):
        assert block["text_offset"][i] == block["text_offset"][i - 1] + len(block["tokens"][i - 1])
    for token, lp, top in zip(block["tokens"], block["token_logprobs"], block["top_logprobs"]):
        assert top[token] == pytest.approx(lp) and 2 <= len(top) <= 3  # the sampled token + the 2 most likely
        assert max(top.values()) >= lp
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15,
                             "prompt_tokens_details": None}


def test_without_logprobs_or_token_ids_those_fields_are_null(engine):
    choice = _complete(engine, prompt=_prompt(4), max_tokens=3).json()["choices"][0]
    assert choice["logprobs"] is None and choice["token_ids"] is None and choice["prompt_token_ids"] is None


def test_string_prompt_is_tokenized_with_the_real_tokenizer(engine):
    text = "def add(a, b):\n    return a + b"
    choice = _complete(engine, prompt=text, max_tokens=2, return_token_ids=True).json()["choices"][0]
    assert choice["prompt_token_ids"] == load_qwen3_tokenizer()(text)["input_ids"]


# ---- fidelity -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_equal_teacher_forced_forward(engine, reference, temperature):
    prompt = _prompt(40)
    choice = _complete(engine, prompt=prompt, max_tokens=24, temperature=temperature, logprobs=0,
                       return_token_ids=True, seed=3).json()["choices"][0]
    expected = _teacher_forced(reference, prompt, choice["token_ids"], temperature)
    assert _max_error(choice["logprobs"]["token_logprobs"], expected) < TOL


def test_batched_requests_of_different_lengths_stay_exact(tiny_model_dir, reference):
    prompts = [_prompt(n, offset=n) for n in (3, 57, 18, 31)]
    with _engine(tiny_model_dir) as engine:
        generator = engine.server.generator
        requests.post(f"{engine.url}/pause", timeout=30).raise_for_status()  # queue all four, then release them
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(_complete, engine, prompt=p, max_tokens=5 + 4 * i, logprobs=0,
                                   return_token_ids=True, seed=i) for i, p in enumerate(prompts)]
            time.sleep(1.0)
            assert not any(f.done() for f in futures)
            requests.post(f"{engine.url}/resume", timeout=30).raise_for_status()
            choices = [f.result(timeout=120).json()["choices"][0] for f in futures]
        assert generator.batch_sizes[4] > 0  # they really ran as one left-padded batch
    for i, (prompt, choice) in enumerate(zip(prompts, choices)):
        assert len(choice["token_ids"]) == 5 + 4 * i  # rows left the batch at their own lengths
        expected = _teacher_forced(reference, prompt, choice["token_ids"])
        assert _max_error(choice["logprobs"]["token_logprobs"], expected) < TOL


def test_requests_joining_a_running_batch_stay_exact(tiny_model_dir, reference):
    """Continuous batching: a shorter and a longer prompt join a batch mid-generation; all three stay exact."""
    plan = [(25, 200), (4, 30), (70, 40)]  # (prompt length, max_tokens)
    with _engine(tiny_model_dir) as engine, concurrent.futures.ThreadPoolExecutor(3) as pool:
        generator = engine.server.generator

        def submit(i):
            length, max_tokens = plan[i]
            return pool.submit(_complete, engine, prompt=_prompt(length, offset=i), max_tokens=max_tokens,
                               logprobs=0, return_token_ids=True, seed=i, ignore_eos=True)

        futures = [submit(0)]
        deadline = time.monotonic() + 30
        while not generator.batch_sizes and time.monotonic() < deadline:  # the first one is decoding
            time.sleep(0.01)
        requests.post(f"{engine.url}/pause", timeout=30).raise_for_status()  # freeze it mid-generation
        futures += [submit(1), submit(2)]
        time.sleep(0.5)
        requests.post(f"{engine.url}/resume", timeout=30).raise_for_status()
        choices = [f.result(timeout=300).json()["choices"][0] for f in futures]
        assert generator.batch_sizes[3] > 0 and generator.batch_sizes[1] > 0  # first alone, then all three together
    for i, ((length, max_tokens), choice) in enumerate(zip(plan, choices)):
        assert len(choice["token_ids"]) == max_tokens
        expected = _teacher_forced(reference, _prompt(length, offset=i), choice["token_ids"])
        assert _max_error(choice["logprobs"]["token_logprobs"], expected) < TOL


# ---- sampling semantics ---------------------------------------------------------------------------------------------
def test_greedy_is_argmax_with_plain_logprobs(engine, reference):
    prompt = _prompt(12)
    choice = _complete(engine, prompt=prompt, max_tokens=5, temperature=0, logprobs=0,
                       return_token_ids=True).json()["choices"][0]
    ids = prompt + choice["token_ids"]
    with torch.no_grad():
        logits = reference(torch.tensor([ids])).logits[0, len(prompt) - 1 : -1]
    assert choice["token_ids"] == logits.argmax(-1).tolist()
    assert _max_error(choice["logprobs"]["token_logprobs"], _teacher_forced(reference, prompt, choice["token_ids"])) < TOL


def test_seeds_reproduce_and_differ(engine):
    prompt = _prompt(10)
    first, again, other = (
        _complete(engine, prompt=prompt, max_tokens=8, seed=s, return_token_ids=True).json()["choices"][0]["token_ids"]
        for s in (11, 11, 12)
    )
    assert first == again and first != other


def test_top_k_logprobs_are_renormalised_over_the_kept_tokens(engine, reference):
    prompt = _prompt(15)
    choice = _complete(engine, prompt=prompt, max_tokens=10, temperature=0.8, top_k=5, logprobs=0,
                       return_token_ids=True, seed=5).json()["choices"][0]
    expected = _teacher_forced(reference, prompt, choice["token_ids"], temperature=0.8, top_k=5)
    assert _max_error(choice["logprobs"]["token_logprobs"], expected) < TOL
    assert all(v > -4.0 for v in expected)  # renormalised over 5 near-equal tokens (~ -1.6), not 151936 (~ -11.9)


def test_top_p_keeps_only_the_nucleus(engine):
    # The random model is near-uniform (top probability ~1e-5): top_p=1e-8 keeps only the most likely token.
    prompt = _prompt(8)
    nucleus = _complete(engine, prompt=prompt, max_tokens=6, top_p=1e-8, seed=1, logprobs=0,
                        return_token_ids=True).json()["choices"][0]
    greedy = _complete(engine, prompt=prompt, max_tokens=6, temperature=0, return_token_ids=True).json()["choices"][0]
    assert nucleus["token_ids"] == greedy["token_ids"]
    assert all(abs(v) < 1e-6 for v in nucleus["logprobs"]["token_logprobs"])  # the one kept token has probability 1


def test_stop_token_ids_end_generation_and_are_included(engine):
    prompt = _prompt(6)
    free = _complete(engine, prompt=prompt, max_tokens=6, seed=4, return_token_ids=True).json()["choices"][0]
    stop_id = free["token_ids"][3]
    expected = free["token_ids"][: free["token_ids"].index(stop_id) + 1]  # same seed: same draws up to the stop
    choice = _complete(engine, prompt=prompt, max_tokens=6, seed=4, stop_token_ids=[stop_id],
                       return_token_ids=True).json()["choices"][0]
    assert choice["token_ids"] == expected and len(expected) < 6
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == stop_id


def test_eos_ends_generation_unless_ignored(tiny_model_dir):
    server = create_engine_server(EngineConfig(model=str(tiny_model_dir), max_model_len=MAX_MODEL_LEN))
    generator = server.generator
    assert generator.eos_token_ids == {151645, 151643}  # <|im_end|> and <|endoftext|>, from generation_config
    try:
        prompt = _prompt(6)
        free = generator.submit(prompt, SamplingParams(seed=8), 5).result(60)
        eos = free.token_ids[2]
        expected = free.token_ids[: free.token_ids.index(eos) + 1]
        generator.eos_token_ids = frozenset({eos})  # pretend that token is EOS
        stopped = generator.submit(prompt, SamplingParams(seed=8), 5).result(60)
        assert stopped.token_ids == expected and stopped.finish_reason == "stop"
        assert stopped.stop_reason is None  # vLLM: EOS leaves stop_reason null
        ignored = generator.submit(prompt, SamplingParams(seed=8, ignore_eos=True), 5).result(60)
        assert ignored.token_ids == free.token_ids and ignored.finish_reason == "length"
    finally:
        generator.close()


# ---- limits and bad input -------------------------------------------------------------------------------------------
def test_prompt_too_long_gets_vllms_400(engine):
    response = _complete(engine, prompt=_prompt(20) * 26, max_tokens=16)  # 520 > 512 tokens
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "BadRequestError" and error["code"] == 400 and error["param"] == "input_tokens"
    assert error["message"] == (
        "You passed 520 input tokens and requested 16 output tokens. However, the model's context length is only "
        "512 tokens, resulting in a maximum input length of 496 tokens. Please reduce the length of the input "
        "prompt. (parameter=input_tokens, value=520)"
    )
    fits_alone = _complete(engine, prompt=_prompt(20) * 25, max_tokens=20)  # 500 + 20 > 512: also refused
    assert fits_alone.status_code == 400 and "You passed 500 input tokens" in fits_alone.json()["error"]["message"]


def test_missing_max_tokens_fills_the_context(engine):
    choice = _complete(engine, prompt=_prompt(20) * 25, max_tokens=None, return_token_ids=True).json()["choices"][0]
    assert len(choice["token_ids"]) == MAX_MODEL_LEN - 500 and choice["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"max_tokens": 2}, 400, "prompt"),
        ({"prompt": [], "max_tokens": 2}, 400, "prompt"),
        ({"prompt": [1, 2, 10**9], "max_tokens": 2}, 400, "prompt"),
        ({"prompt": [1, -3], "max_tokens": 2}, 400, "prompt"),
        ({"prompt": [1, "x"], "max_tokens": 2}, 400, "prompt"),
        ({"prompt": [[1, 2], [3, 4]], "max_tokens": 2}, 400, "prompt"),
        ({"prompt": [1, 2], "max_tokens": -1}, 400, "max_tokens"),
        ({"prompt": [1, 2], "max_tokens": "5"}, 400, "max_tokens"),
        ({"prompt": [1, 2], "temperature": -0.5}, 400, "temperature"),
        ({"prompt": [1, 2], "top_p": 0}, 400, "top_p"),
        ({"prompt": [1, 2], "top_k": -7}, 400, "top_k"),
        ({"prompt": [1, 2], "n": 2}, 400, "n"),
        ({"prompt": [1, 2], "stop_token_ids": [1, 10**9]}, 400, "stop_token_ids"),
        ({"prompt": [1, 2], "logprobs": 50}, 400, "logprobs"),
        ({"prompt": [1, 2], "stream": True}, 400, "stream"),
        ({"prompt": [1, 2], "model": "someone-else"}, 404, "model"),
    ],
)
def test_bad_requests_get_openai_style_errors(engine, body, status, param):
    response = requests.post(f"{engine.url}/v1/completions", json=body, timeout=30)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == status and error["param"] == param and error["message"]


def test_malformed_bodies_and_unknown_routes_are_json_errors(engine):
    for data in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        response = requests.post(f"{engine.url}/v1/completions", data=data, timeout=30)
        assert response.status_code == 400 and response.json()["error"]["type"] == "BadRequestError"
    response = requests.get(f"{engine.url}/v1/nothing", timeout=30)
    assert response.status_code == 404 and response.json()["error"]["code"] == 404
    assert requests.post(f"{engine.url}/pause", params={"mode": "nap"}, timeout=30).status_code == 400
    assert _complete(engine, prompt=[1, 2, 3], max_tokens=1).status_code == 200  # the engine is still fine


# ---- concurrency and pause ------------------------------------------------------------------------------------------
def test_event_loop_stays_responsive_during_generation(engine):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        long = pool.submit(_complete, engine, prompt=_prompt(30), max_tokens=300, return_token_ids=True)
        time.sleep(0.3)
        started = time.perf_counter()
        assert requests.get(f"{engine.url}/health", timeout=10).status_code == 200
        health_latency = time.perf_counter() - started
        assert not long.done()
        assert len(long.result(timeout=300).json()["choices"][0]["token_ids"]) == 300
    assert health_latency < 1.0


def test_a_client_that_hangs_up_frees_the_engine(tiny_model_dir):
    with _engine(tiny_model_dir) as engine:
        generator = engine.server.generator

        async def hang_up():
            async with aiohttp.ClientSession() as session:
                call = asyncio.ensure_future(session.post(f"{engine.url}/v1/completions", json={
                    "prompt": _prompt(5), "max_tokens": 500, "ignore_eos": True}))
                await asyncio.sleep(0.5)
                assert generator._batch_running and not call.done()
                call.cancel()  # closes the connection mid-request

        asyncio.run(hang_up())
        deadline = time.monotonic() + 10
        while generator._batch_running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not generator._batch_running and generator.dropped_requests == 1  # dropped, not run to the end
        assert _complete(engine, prompt=[1, 2], max_tokens=1).status_code == 200


def test_pause_keep_freezes_and_resume_continues(engine):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert requests.post(f"{engine.url}/pause", params={"mode": "keep"}, timeout=30).status_code == 200
        try:
            assert requests.get(f"{engine.url}/is_paused", timeout=10).json() == {"is_paused": True}
            pending = pool.submit(_complete, engine, prompt=_prompt(5), max_tokens=3)
            time.sleep(0.8)
            assert not pending.done()
        finally:
            requests.post(f"{engine.url}/resume", timeout=30).raise_for_status()
        assert pending.result(timeout=60).status_code == 200
    assert requests.get(f"{engine.url}/is_paused", timeout=10).json() == {"is_paused": False}


def test_a_pause_that_never_ends_fails_requests_with_503(tiny_model_dir):
    with _engine(tiny_model_dir, max_pause_s=0.5) as engine:
        requests.post(f"{engine.url}/pause", timeout=30).raise_for_status()
        started = time.perf_counter()
        response = _complete(engine, prompt=_prompt(5), max_tokens=3)
        assert response.status_code == 503 and "paused" in response.json()["error"]["message"]
        assert time.perf_counter() - started < 5


def test_pause_wait_lets_running_requests_finish_first(tiny_model_dir):
    with _engine(tiny_model_dir) as engine, concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(_complete, engine, prompt=_prompt(5), max_tokens=60, ignore_eos=True,
                              return_token_ids=True)
        deadline = time.monotonic() + 30
        while not engine.server.generator.batch_sizes and time.monotonic() < deadline:
            time.sleep(0.01)
        answer = requests.post(f"{engine.url}/pause", params={"mode": "wait"}, timeout=120)
        assert answer.status_code == 200 and answer.json() == {"status": "paused", "mode": "wait"}
        assert not engine.server.generator._batch_running  # returned only once nothing was decoding
        choice = running.result(timeout=30).json()["choices"][0]  # complete although the engine is paused now
        assert len(choice["token_ids"]) == 60 and choice["finish_reason"] == "length"


def test_pause_abort_ends_in_flight_requests(tiny_model_dir):
    with _engine(tiny_model_dir) as engine, concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(_complete, engine, prompt=_prompt(5), max_tokens=400, return_token_ids=True)
        time.sleep(0.5)
        requests.post(f"{engine.url}/pause", params={"mode": "abort"}, timeout=30).raise_for_status()
        choice = running.result(timeout=60).json()["choices"][0]
        assert choice["finish_reason"] == "abort" and 0 < len(choice["token_ids"]) < 400


def test_bfloat16_engine_serves_and_validates_bf16_weights(tiny_model_dir):
    with _engine(tiny_model_dir, dtype="bfloat16") as engine:
        info = requests.get(f"{engine.url}/server_info", timeout=10).json()
        assert info["vllm_config"]["model_config"]["dtype"] == "torch.bfloat16"
        choice = _complete(engine, prompt=_prompt(6), max_tokens=4, logprobs=0, return_token_ids=True).json()
        assert len(choice["choices"][0]["logprobs"]["token_logprobs"]) == 4
        norm = engine.server.generator.model.model.norm.weight.detach()
        with pytest.raises(RuntimeError, match="dtype"):
            push_weights(engine.url, [("model.norm.weight", norm.float())], version=1, timeout=60)
        assert push_weights(engine.url, [("model.norm.weight", norm * 2)], version=1, timeout=60)["version"] == 1


# ---- weights --------------------------------------------------------------------------------------------------------
def test_weight_push_changes_generation_exactly(tiny_model_dir):
    updated = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        updated.model.norm.weight.mul_(3.0)
        updated.model.layers[0].mlp.down_proj.weight.mul_(-2.0)
    names = ["model.norm.weight", "model.layers.0.mlp.down_proj.weight"]
    state = updated.state_dict()
    prompt = _prompt(20)
    with _engine(tiny_model_dir) as engine:
        before = _complete(engine, prompt=prompt, max_tokens=8, temperature=0, logprobs=0,
                           return_token_ids=True).json()["choices"][0]
        answer = push_weights(engine.url, [(n, state[n]) for n in names], version=3, timeout=60)
        assert answer == {"status": "ok", "version": 3, "tensors": 2}
        assert get_weights_version(engine.url) == 3
        after = _complete(engine, prompt=prompt, max_tokens=8, temperature=0, logprobs=0,
                          return_token_ids=True).json()["choices"][0]
    expected = _teacher_forced(updated, prompt, after["token_ids"])
    assert _max_error(after["logprobs"]["token_logprobs"], expected) < TOL
    assert after["logprobs"]["token_logprobs"] != before["logprobs"]["token_logprobs"]


def test_full_state_dict_with_tied_embeddings_round_trips(tiny_model_dir, reference):
    with _engine(tiny_model_dir) as engine:
        answer = push_weights(engine.url, reference.state_dict().items(), version=1, timeout=120)
        assert answer["tensors"] == len(reference.state_dict())  # lm_head and embed_tokens share storage: cloned


def test_bad_weight_pushes_are_refused_and_change_nothing(tiny_model_dir, reference):
    state = reference.state_dict()
    good = ("model.norm.weight", state["model.norm.weight"] * 5)
    cases = [
        ([good, ("model.not_a_layer.weight", torch.zeros(3))], "unknown tensor name"),
        ([good, ("model.layers.0.mlp.up_proj.weight", torch.zeros(2, 2))], "shape"),
        ([good, ("model.layers.0.mlp.up_proj.weight", state["model.layers.0.mlp.up_proj.weight"].double())], "dtype"),
        ([("model.norm.weight", torch.full_like(state["model.norm.weight"], float("nan")))], "NaN"),
    ]
    with _engine(tiny_model_dir) as engine:
        prompt = _prompt(10)
        before = _complete(engine, prompt=prompt, max_tokens=4, temperature=0, logprobs=0).json()
        for tensors, reason in cases:
            with pytest.raises(RuntimeError, match=reason):
                push_weights(engine.url, tensors, version=9, timeout=60)
        raw = requests.post(f"{engine.url}/update_weights", params={"version": 9}, data=b"not safetensors", timeout=30)
        assert raw.status_code == 400 and "safetensors" in raw.json()["error"]["message"]
        body = save_safetensors({"model.norm.weight": state["model.norm.weight"].clone()})
        unversioned = requests.post(f"{engine.url}/update_weights", data=body, timeout=30)
        assert unversioned.status_code == 400 and unversioned.json()["error"]["param"] == "version"
        assert get_weights_version(engine.url) == 0
        after = _complete(engine, prompt=prompt, max_tokens=4, temperature=0, logprobs=0).json()
    assert after["choices"][0]["logprobs"] == before["choices"][0]["logprobs"]  # the valid half was not applied


def test_weights_pushed_while_paused_apply_before_resumed_steps(tiny_model_dir):
    with _engine(tiny_model_dir) as engine, concurrent.futures.ThreadPoolExecutor(1) as pool:
        generator = engine.server.generator
        running = pool.submit(_complete, engine, prompt=_prompt(5), max_tokens=300, return_token_ids=True)
        time.sleep(0.5)
        requests.post(f"{engine.url}/pause", params={"mode": "keep"}, timeout=30).raise_for_status()
        norm = generator.model.model.norm.weight.detach().clone()
        push_weights(engine.url, [("model.norm.weight", norm * 2)], version=2, timeout=60)
        assert torch.equal(generator.model.model.norm.weight, norm * 2)
        assert not running.done()  # frozen, not failed
        requests.post(f"{engine.url}/resume", timeout=30).raise_for_status()
        choice = running.result(timeout=120).json()["choices"][0]
        assert len(choice["token_ids"]) == 300 and choice["finish_reason"] == "length"
