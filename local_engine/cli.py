"""`intercept-rl engine`: load a model directory (or the embedded tiny model) and serve it on HTTP."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, HfArgumentParser

from intercept_common.config_tree import parse_config_tree
from intercept_common.engine_process import PARENT_PID_ENV
from intercept_common.errors import ConfigError, UserError
from intercept_common.http_site import start_site
from local_engine.generation import BatchedGenerator
from local_engine.server import EngineConfig, EngineServer

logger = logging.getLogger("local_engine")

SMALL_MODEL_PARAMETERS = 50_000_000  # below this, one torch thread beats several (see --torch-threads)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class ModelNotFoundError(FileNotFoundError, ConfigError):
    """`--model` names neither an embedded model nor a local model directory."""


def resolve_model_dir(model: str) -> Path:
    """An embedded model's name (`embedded`, `embedded-64k`, `embedded-peaked`) → its cached directory (built on first
    use); anything else must be a local model directory."""
    from local_engine.embedded import EMBEDDED_MODELS, embedded_model_dir

    if model in EMBEDDED_MODELS:
        return embedded_model_dir(model)
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"--model {model!r} is not a model directory (no config.json); the local engine "
                                "loads local directories only (or `embedded`)")
    return path


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a generation: the generation config's EOS ids plus the tokenizer's EOS (as vLLM)."""
    configured = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = [configured] if isinstance(configured, int) else list(configured or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def create_engine_server(config: EngineConfig) -> EngineServer:
    """Load the model and tokenizer (offline) and wire them to a generator and the HTTP handlers."""
    model_dir = resolve_model_dir(config.model)
    # The context length against the model's positions, from its config.json: before the weights load.
    limit = int(getattr(AutoConfig.from_pretrained(model_dir, local_files_only=True), "max_position_embeddings", 0)
                or 0)
    max_model_len = config.max_model_len or limit
    if max_model_len < 2 or (limit and max_model_len > limit):
        raise ConfigError(f"--max-model-len {max_model_len} must lie in [2, {limit}] (the model's max positions)")
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=DTYPES[config.dtype], local_files_only=True, attn_implementation="sdpa"
    )
    threads = config.torch_threads or (1 if model.num_parameters() < SMALL_MODEL_PARAMETERS else 0)
    if threads > 0:
        torch.set_num_threads(threads)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generator = BatchedGenerator(
        model,
        eos_token_ids=eos_token_ids(model, tokenizer),
        pad_token_id=int(pad if pad is not None else 0),
        max_batch_size=config.max_batch_size,
        seed=config.seed,
        max_pause_s=config.max_pause_s,
    )
    return EngineServer(generator, tokenizer, config, max_model_len)


async def _stop_when_parent_dies(stop: asyncio.Event, interval_s: float = 1.0) -> None:
    """Started by `LocalEngineProcess` (PARENT_PID_ENV set): stop once that parent is gone, even if it was SIGKILLed
    and could not stop us (we run in our own session, so its process group's signals do not reach us)."""
    parent = os.environ.get(PARENT_PID_ENV)
    if not parent or not parent.isdigit():
        return
    while os.getppid() == int(parent):
        await asyncio.sleep(interval_s)
    logging.getLogger(__name__).warning("the process that started this engine (pid %s) is gone: stopping", parent)
    stop.set()


async def serve(server: EngineServer, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM; print the bound URL once listening (port 0 picks a free port)."""
    runner, url = await start_site(server.app(), host=host, port=port)
    try:
        print(f"local engine serving {server.served_model_name!r} on {url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        watch = asyncio.ensure_future(_stop_when_parent_dies(stop))
        await stop.wait()
        watch.cancel()
    finally:
        await runner.cleanup()  # runs on_shutdown: the generator thread stops and waiting requests fail cleanly


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(EngineConfig)
    parser.prog = "intercept-rl engine"
    parser.description = ("Serve a model with the local engine (the vLLM API subset intercept-rl uses). Options also "
                          "come from --config FILE.yaml; flags win.")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        (config,), _ = parse_config_tree(parser, list(sys.argv[1:] if argv is None else argv))
        server = create_engine_server(config)
    except (UserError, OSError) as error:  # OSError: a model directory transformers cannot read; else a bug's trace
        print(f"intercept-rl engine: {error}", file=sys.stderr)
        return 2
    asyncio.run(serve(server, config.host, config.port))
    return 0
