"""The local engine's HTTP API: the subset of vLLM's OpenAI-compatible server that we and TRL use, plus a small
weight-push protocol of our own (vLLM's NCCL path needs GPUs).

Shapes follow vLLM (`vllm serve`): errors are `{"error": {"message", "type", "param", "code"}}`; `/v1/completions`
answers `{"id": "cmpl-…", "object": "text_completion", "created", "model", "choices": [{"index", "text", "logprobs":
{"text_offset", "token_logprobs", "tokens", "top_logprobs"} | null, "finish_reason", "stop_reason", "token_ids",
"prompt_logprobs", "prompt_token_ids"}], "usage": {"prompt_tokens", "total_tokens", "completion_tokens",
"prompt_tokens_details"}}`. Weight push: `POST /update_weights?version=N` (or header `X-Weights-Version`) with a
safetensors-serialized body of name → tensor, names as in the HF model's `state_dict()`; `GET /weights_version`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

import torch
from aiohttp import web
from safetensors.torch import load as load_safetensors
from transformers import PreTrainedTokenizerBase

from intercept_common.context_length import MAX_MODEL_LEN_HELP, check_max_model_len
from intercept_common.errors import ConfigError
from intercept_common.openai_errors import openai_error_body
from local_engine.client import WEIGHTS_VERSION_HEADER
from local_engine.generation import BatchedGenerator, EngineClosedError, EnginePausedError, WeightUpdateError
from local_engine.sampling import RequestError, parse_sampling_params

logger = logging.getLogger(__name__)



@dataclass
class EngineConfig:
    """Options of `intercept-rl engine` (parsed by transformers' `HfArgumentParser`)."""

    model: str = field(metadata={"help": "Model directory (HF format), or `embedded` for the built-in tiny Qwen3."})
    host: str = field(default="127.0.0.1", metadata={"help": "Interface to listen on."})
    port: int = field(default=8000, metadata={"help": "TCP port to listen on (0 = any free port, printed at start)."})
    served_model_name: str | None = field(
        default=None, metadata={"help": "Name clients send as `model`; defaults to --model."}
    )
    max_model_len: int | None = field(default=None, metadata={"help": MAX_MODEL_LEN_HELP})
    dtype: Literal["float32", "bfloat16"] = field(
        default="float32", metadata={"help": "Weights and compute dtype; float32 gives exact logprobs on CPU."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the sampler used by requests that carry no `seed`."})
    max_batch_size: int = field(default=8, metadata={"help": "Most requests decoded together in one batch."})
    max_pause_s: float = field(
        default=600.0, metadata={"help": "A pause longer than this fails the requests it holds (503), never hangs."}
    )
    torch_threads: int = field(
        default=0, metadata={"help": "Torch CPU threads (process-wide). 0 = auto: 1 for models under 50M parameters "
                             "(their matrices are too small to gain from threads; measured 3-6x faster on a busy "
                             "2-core box), torch's default otherwise."}
    )
    max_request_bytes: int = field(
        default=16 * 2**30, metadata={"help": "Largest request body accepted (weight pushes are the big ones)."}
    )

    def __post_init__(self) -> None:  # checked while the options are parsed, before a model loads or a port opens
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if not self.max_pause_s > 0:
            raise ConfigError(f"max_pause_s must be > 0, got {self.max_pause_s}")
        check_max_model_len(self.max_model_len)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must lie in [0, 65535], got {self.port}")
        if self.torch_threads < 0:
            raise ConfigError(f"torch_threads must be >= 0 (0 = auto), got {self.torch_threads}")
        if self.max_request_bytes < 1:
            raise ConfigError(f"max_request_bytes must be >= 1, got {self.max_request_bytes}")


ENGINE_SERVER: web.AppKey[EngineServer] = web.AppKey("engine_server")


async def _stop_generator(app: web.Application) -> None:
    """On shutdown, before connections close: the generator thread stops, so waiting requests fail cleanly at once
    instead of holding the shutdown for their generation."""
    await asyncio.to_thread(app[ENGINE_SERVER].generator.close)


def error_response(status: int, message: str, err_type: str, param: str | None = None) -> web.Response:
    """vLLM's error JSON (its `code` is the HTTP status)."""
    return web.json_response(openai_error_body(message, err_type, code=status, param=param), status=status)


def context_length_message(prompt_tokens: int, max_tokens: int, max_model_len: int) -> str:
    """vLLM's wording for a prompt that does not fit, so clients match one message for both engines."""
    return (
        f"You passed {prompt_tokens} input tokens and requested {max_tokens} output tokens. However, the model's "
        f"context length is only {max_model_len} tokens, resulting in a maximum input length of "
        f"{max(max_model_len - max_tokens, 0)} tokens. Please reduce the length of the input prompt. "
        f"(parameter=input_tokens, value={prompt_tokens})"
    )


@web.middleware
async def json_errors(request: web.Request, handler):
    """Every failure becomes vLLM-style JSON: bad input 400, unknown route 404, our own bug 500; never a crash."""
    try:
        return await handler(request)
    except RequestError as error:
        return error_response(400, str(error), "BadRequestError", error.param)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        kind = {404: "NotFoundError", 405: "MethodNotAllowedError", 413: "BadRequestError"}.get(error.status, "Error")
        return error_response(error.status, error.reason or str(error), kind)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 - the last line of defence of a server
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, f"internal error: {type(error).__name__}: {error}", "InternalServerError")


def load_safetensors_dir(directory: str) -> dict[str, torch.Tensor]:
    """Every tensor of every `*.safetensors` file in `directory` (a sharded checkpoint); a name twice is an error."""
    from pathlib import Path

    from safetensors.torch import load_file

    files = sorted(Path(directory).glob("*.safetensors"))
    if not files:
        raise ValueError("no .safetensors file there")
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        for name, tensor in load_file(str(path)).items():
            if name in tensors:
                raise ValueError(f"tensor {name!r} is in two files")
            tensors[name] = tensor
    return tensors


class EngineServer:
    """Route handlers around one `BatchedGenerator`."""

    def __init__(self, generator: BatchedGenerator, tokenizer: PreTrainedTokenizerBase, config: EngineConfig,
                 max_model_len: int):
        self.generator = generator
        self.tokenizer = tokenizer
        self.config = config
        self.max_model_len = max_model_len
        self.served_model_name = config.served_model_name or config.model
        self.vocab_size = int(generator.model.config.vocab_size)
        self.created = int(time.time())

    def app(self) -> web.Application:
        app = web.Application(middlewares=[json_errors], client_max_size=self.config.max_request_bytes)
        app.add_routes([
            web.get("/health", self.health),
            web.get("/v1/models", self.models),
            web.get("/server_info", self.server_info),
            web.get("/get_world_size", self.world_size),
            web.post("/v1/completions", self.completions),
            web.post("/pause", self.pause),
            web.post("/resume", self.resume),
            web.get("/is_paused", self.is_paused),
            web.post("/update_weights", self.update_weights),
            web.post("/collective_rpc", self.collective_rpc),
            web.get("/weights_version", self.weights_version),
        ])
        app[ENGINE_SERVER] = self
        # on_shutdown, not the cleanup context the other apps use: it runs before aiohttp waits for open handlers, so
        # requests waiting on the generator fail at once instead of holding the shutdown for their generation. The
        # generator itself is made and owned by the caller (EngineServer), not by the app.
        app.on_shutdown.append(_stop_generator)
        return app

    # ---- introspection ------------------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def models(self, request: web.Request) -> web.Response:
        card = {
            "id": self.served_model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "vllm",
            "root": self.config.model,
            "parent": None,
            "max_model_len": self.max_model_len,
            "permission": [],
        }
        return web.json_response({"object": "list", "data": [card]})

    async def server_info(self, request: web.Request) -> web.Response:
        # The part of vLLM's `vllm_config` dump that TRL reads (dtype, lora_config, parallel_config), same keys.
        model_config = {
            "model": self.config.model,
            "served_model_name": self.served_model_name,
            "dtype": str(self.generator.model.dtype),  # "torch.float32", as vLLM stringifies torch dtypes
            "max_model_len": self.max_model_len,
            "seed": self.config.seed,
        }
        vllm_config = {
            "model_config": model_config,
            "lora_config": None,
            "parallel_config": {"data_parallel_size": 1, "tensor_parallel_size": 1, "pipeline_parallel_size": 1},
            "engine": "intercept-rl local_engine",
        }
        return web.json_response({"vllm_config": vllm_config})

    async def world_size(self, request: web.Request) -> web.Response:
        return web.json_response({"world_size": 1})

    # ---- generation ---------------------------------------------------------------------------------------------
    async def _json_body(self, request: web.Request) -> dict:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RequestError(f"the request body is not valid JSON: {error}") from error
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        return body

    def _prompt_ids(self, prompt) -> list[int]:
        """Token ids from `prompt`: a list of ids, a string, or a one-element list of either."""
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (list, str)):
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        elif isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            ids = prompt
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise RequestError(f"token id {bad[0]} is out of vocabulary (size {self.vocab_size})", "prompt")
        elif isinstance(prompt, list) and len(prompt) > 1 and all(isinstance(p, (list, str)) for p in prompt):
            raise RequestError("the local engine serves one prompt per request", "prompt")
        else:
            raise RequestError("prompt must be a string or a list of token ids", "prompt")
        if not ids:
            raise RequestError("the prompt is empty", "prompt")
        return list(ids)

    async def completions(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        model = body.get("model")
        if model is not None and model != self.served_model_name:
            return error_response(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        if "prompt" not in body:
            raise RequestError("prompt is required", "prompt")
        params = parse_sampling_params(body, self.vocab_size)
        prompt_ids = self._prompt_ids(body["prompt"])
        # As vLLM: no max_tokens means "fill the context"; prompt + max_tokens beyond the context is a 400.
        max_tokens = params.max_tokens if params.max_tokens is not None else self.max_model_len - len(prompt_ids)
        if len(prompt_ids) + max(max_tokens, 0) > self.max_model_len or max_tokens < 1:
            message = context_length_message(len(prompt_ids), max(max_tokens, 0), self.max_model_len)
            return error_response(400, message, "BadRequestError", "input_tokens")

        try:
            future = self.generator.submit(prompt_ids, params, max_tokens)
        except EngineClosedError as error:
            return error_response(503, str(error), "ServiceUnavailableError")
        try:
            result = await asyncio.wrap_future(future)  # cancelling this (client gone) drops the request
        except EnginePausedError as error:
            return error_response(503, str(error), "ServiceUnavailableError")
        except EngineClosedError as error:
            return error_response(503, str(error), "ServiceUnavailableError")

        text = self.tokenizer.decode(result.token_ids, skip_special_tokens=True)
        logprobs = None
        if params.logprobs is not None:
            logprobs = self._logprobs_block(result.token_ids, result.logprobs, result.top_logprobs)
        choice = {
            "index": 0,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": result.finish_reason,
            "stop_reason": result.stop_reason,
            "token_ids": result.token_ids if params.return_token_ids else None,
            "prompt_logprobs": None,
            "prompt_token_ids": prompt_ids if params.return_token_ids else None,
        }
        usage = {
            "prompt_tokens": len(prompt_ids),
            "total_tokens": len(prompt_ids) + len(result.token_ids),
            "completion_tokens": len(result.token_ids),
            "prompt_tokens_details": None,
        }
        response = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.served_model_name,
            "choices": [choice],
            "usage": usage,
            "system_fingerprint": None,
            "kv_transfer_params": None,
        }
        return web.json_response(response)

    def _logprobs_block(self, token_ids, logprobs, top_logprobs) -> dict:
        """OpenAI completions logprobs: per-token strings, their logprobs, text offsets and top alternatives."""
        tokens = [self.tokenizer.decode([token]) for token in token_ids]
        offsets, position = [], 0
        for token in tokens:
            offsets.append(position)
            position += len(token)
        top = [{self.tokenizer.decode([i]): lp for i, lp in entry.items()} for entry in top_logprobs]
        return {"text_offset": offsets, "token_logprobs": list(logprobs), "tokens": tokens, "top_logprobs": top}

    # ---- control and weights ------------------------------------------------------------------------------------
    async def pause(self, request: web.Request) -> web.Response:
        mode = request.query.get("mode", "keep")
        if mode not in ("keep", "wait", "abort"):
            raise RequestError(f"mode must be keep, wait or abort, got {mode!r}", "mode")
        try:
            await asyncio.to_thread(self.generator.pause, mode)
        except TimeoutError as error:
            return error_response(504, str(error), "TimeoutError")
        return web.json_response({"status": "paused", "mode": mode})

    async def resume(self, request: web.Request) -> web.Response:
        self.generator.resume()
        return web.json_response({"status": "resumed"})

    async def is_paused(self, request: web.Request) -> web.Response:
        return web.json_response({"is_paused": self.generator.is_paused})

    async def update_weights(self, request: web.Request) -> web.Response:
        raw_version = request.query.get("version", request.headers.get(WEIGHTS_VERSION_HEADER))
        try:
            version = int(raw_version)
        except (TypeError, ValueError):
            raise RequestError(
                f"a weight update needs an integer `version` (query or {WEIGHTS_VERSION_HEADER} header), "
                f"got {raw_version!r}", "version"
            ) from None
        payload = await request.read()
        try:
            tensors: dict[str, torch.Tensor] = await asyncio.to_thread(load_safetensors, payload)
        except Exception as error:  # safetensors raises its own error types for any malformed byte
            raise RequestError(f"the body is not a safetensors-serialized state dict: {error}", "body") from error
        try:
            applied = await asyncio.to_thread(self.generator.update_weights, tensors, version)
        except WeightUpdateError as error:
            raise RequestError(str(error), "body") from error
        return web.json_response({"status": "ok", "version": version, "tensors": applied})

    async def collective_rpc(self, request: web.Request) -> web.Response:
        """vLLM's dev route, for the one method a trainer calls through it: `reload_weights` from a directory of
        safetensors files (the `disk` weight sync, trainer/vllm_weight_sync.py). Applied as the next version."""
        body = await self._json_body(request)
        method = body.get("method")
        if method != "reload_weights":
            raise RequestError(f"collective_rpc supports only method 'reload_weights' here, got {method!r}", "method")
        kwargs = body.get("kwargs") or {}
        directory = kwargs.get("weights_path") if isinstance(kwargs, dict) else None
        if not isinstance(directory, str) or not directory:
            raise RequestError("reload_weights needs kwargs.weights_path: a directory of .safetensors files", "kwargs")
        try:
            tensors = await asyncio.to_thread(load_safetensors_dir, directory)
        except (OSError, ValueError) as error:
            raise RequestError(f"cannot read weights from {directory}: {error}", "kwargs") from error
        try:
            applied = await asyncio.to_thread(self.generator.update_weights, tensors,
                                              self.generator.weights_version + 1)
        except WeightUpdateError as error:
            raise RequestError(str(error), "kwargs") from error
        return web.json_response({"results": [{"tensors": applied, "version": self.generator.weights_version}]})

    async def weights_version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": self.generator.weights_version})
