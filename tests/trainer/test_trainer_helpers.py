"""Shared pieces of the trainer tests (no tests here): a rollout worker that feeds TRL samples built from the REAL
local engine's completions, a weight transfer that probes the engine after every sync, and the trainer-side
logprobs of a sequence computed through TRL's own scoring path (tree attention + fused LM head).

Also importable from a subprocess (`python -c "from tests.trainer.test_trainer_helpers import ..."`), which the Trackio test
needs because trackio fixes its directory at import time.
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import requests
import torch
from trl.experimental.async_grpo.async_rollout_worker import RolloutSample

from trainer.weight_transfer import LocalEngineWeightTransfer

PROMPTS = [
    [{"role": "user", "content": "List the files in the repository."}],
    [{"role": "user", "content": "Fix the failing test in tests/test_parser.py."}],
    [{"role": "user", "content": "Explain what the function `merge_intervals` does."}],
]


def engine_complete(url: str, prompt_ids: list[int], *, max_tokens: int, temperature: float, seed: int | None = None,
                    timeout: float = 120.0) -> tuple[list[int], list[float]]:
    """One `/v1/completions` call with a token-id prompt; returns (sampled ids, their post-temperature logprobs)."""
    body = {"model": "policy", "prompt": prompt_ids, "max_tokens": max_tokens, "temperature": temperature,
            "logprobs": 0, "return_token_ids": True}
    if seed is not None:
        body["seed"] = seed
    response = requests.post(f"{url}/v1/completions", json=body, timeout=timeout)
    response.raise_for_status()
    choice = response.json()["choices"][0]
    token_ids, logprobs = choice["token_ids"], choice["logprobs"]["token_logprobs"]
    if not token_ids or len(token_ids) != len(logprobs) or any(lp is None for lp in logprobs):
        raise AssertionError(f"malformed engine answer: {choice}")
    return token_ids, [float(lp) for lp in logprobs]


class EngineSampleWorker:
    """TRL `RolloutWorkerProtocol` test worker: GRPO groups of real engine completions on fixed chat prompts.

    The reward (fraction of sampled ids below `vocab/2`) is arbitrary but varies inside a group, so advantages are
    non-zero and the optimizer really moves the weights. Each sample is stamped with the policy version that was live
    when its request was sent.
    """

    def __init__(self, engine_url: str, tokenizer, *, num_generations: int = 4, max_tokens: int = 12,
                 temperature: float = 1.0, queue_target: int = 8, max_groups: int | None = None):
        self.engine_url = engine_url
        self.num_generations = num_generations
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.queue_target = queue_target
        self.max_groups = max_groups
        self.prompt_ids = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True,
                                                         return_dict=False) for p in PROMPTS]
        self.half_vocab = len(tokenizer) // 2
        self.rollout_buffer: queue.Queue = queue.Queue()
        self.metrics_queue: queue.Queue = queue.Queue()
        self.model_version = 0
        self.versions_seen: list[int] = []  # update_model_version calls, in order
        self.samples_made: list[RolloutSample] = []
        self.started_at_version: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._next_group = 0

    def start(self) -> None:
        self.started_at_version = self.model_version
        self._thread = threading.Thread(target=self._run, name="engine-sample-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)

    def state_dict(self) -> dict:
        return {"next_group": self._next_group}

    def load_state_dict(self, state: dict) -> None:
        self._next_group = int(state["next_group"])

    def update_model_version(self, model_version: int) -> None:
        self.model_version = model_version
        self.versions_seen.append(model_version)

    def check_health(self, stale_after_s: float) -> None:
        if self._error is not None:
            raise RuntimeError(f"test worker crashed: {self._error!r}") from self._error

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.max_groups is not None and self._next_group >= self.max_groups:
                    return
                if self.rollout_buffer.qsize() >= self.queue_target:
                    self._stop.wait(0.05)
                    continue
                self._make_group()
        except BaseException as error:  # noqa: BLE001 - surfaced through check_health
            self._error = error

    def _make_group(self) -> None:
        group_id = self._next_group
        self._next_group += 1
        prompt_index = group_id % len(self.prompt_ids)
        prompt = self.prompt_ids[prompt_index]
        rows = []
        for _ in range(self.num_generations):
            version = self.model_version
            ids, logprobs = engine_complete(self.engine_url, prompt, max_tokens=self.max_tokens,
                                            temperature=self.temperature)
            rows.append((version, ids, logprobs, sum(i < self.half_vocab for i in ids) / len(ids)))
        rewards = np.array([r[3] for r in rows], dtype=np.float64)
        if rewards.std() == 0:
            return
        advantages = (rewards - rewards.mean()) / (rewards.std() + 1e-8)
        for (version, ids, logprobs, reward), advantage in zip(rows, advantages, strict=True):
            sample = RolloutSample(
                prompt=PROMPTS[prompt_index],
                completion=[{"role": "assistant", "content": f"<{len(ids)} sampled tokens>"}],
                input_ids=np.array(prompt + ids, dtype=np.int64),
                completion_mask=np.array([0] * len(prompt) + [1] * len(ids), dtype=np.int64),
                old_log_probs=np.array([0.0] * len(prompt) + logprobs, dtype=np.float32),
                advantage=float(advantage),
                model_version=version,
                group_id=group_id,
                metrics={"reward": float(reward)},
                enqueued_at=time.time(),
            )
            self.samples_made.append(sample)
            self.rollout_buffer.put(sample)
        self.metrics_queue.put({"rollout/groups_total": 1.0, "rollout/reward_mean": float(rewards.mean())})


def trainer_logprobs(model: torch.nn.Module, input_ids: list[int]) -> torch.Tensor:
    """Logprob of every token after the first, through TRL's training forward (tree attention, fused LM head at the
    temperature TRL patched in): exactly what `compute_loss` scores a single-sequence row with."""
    length = len(input_ids)
    ids = torch.tensor([input_ids])
    labels = torch.cat([ids[0, 1:], torch.tensor([-100])])[None]
    bounds = torch.tensor([0, length], dtype=torch.int32)
    with torch.no_grad():
        out = model(
            input_ids=ids,
            position_ids=torch.arange(length)[None],
            shift_labels=labels,
            fused_lm_head=True,
            tree_kv_index=torch.arange(length),
            tree_cu_seqlens_q=bounds,
            tree_cu_seqlens_k=bounds,
            tree_max_seqlen_q=length,
            tree_max_seqlen_k=length,
        )
    return out.log_probs.flatten()[: length - 1].float()


class ProbingWeightTransfer(LocalEngineWeightTransfer):
    """`LocalEngineWeightTransfer` that, after every sync, samples a fixed probe from the engine and scores the same
    tokens with the trainer's model, so a test can compare them (F2). Also records the names the engine received."""

    def __init__(self, engine_url: str, probe_prompt_ids: list[int], *, probe_tokens: int = 16,
                 temperature: float = 1.0, **kwargs):
        super().__init__(engine_url, **kwargs)
        self.probe_prompt_ids = probe_prompt_ids
        self.probe_tokens = probe_tokens
        self.temperature = temperature
        self.model: torch.nn.Module | None = None  # set by the test once the trainer exists
        self.pushed_names: list[list[str]] = []
        self.probes: list[dict] = []

    def send_weights(self, iterator) -> None:
        names: list[str] = []

        def recording():
            for name, tensor in iterator:
                names.append(name)
                yield name, tensor

        super().send_weights(recording())
        self.pushed_names.append(names)

    def resume(self) -> None:
        super().resume()
        if self.model is None:
            raise AssertionError("ProbingWeightTransfer.model must be set before training")
        ids, engine_lp = engine_complete(self.engine_url, self.probe_prompt_ids, max_tokens=self.probe_tokens,
                                         temperature=self.temperature, seed=1234)
        full = self.probe_prompt_ids + ids
        ours = trainer_logprobs(self.model, full)[len(self.probe_prompt_ids) - 1:]
        engine = torch.tensor(engine_lp)
        version = requests.get(f"{self.engine_url}/weights_version", timeout=30).json()["version"]
        self.probes.append({"version": self.version, "engine_version": version, "ids": ids, "engine": engine,
                            "trainer": ours, "max_abs_diff": float((engine - ours).abs().max())})


def run_training_with_test_worker(argv: list[str], engine_url: str) -> None:
    """What `main()` does, with this module's worker in place of the real agent pipeline; run in a fresh process.

    Writes `log_history.json` into the output dir and prints the dashboard command.
    """
    import json
    import os

    from trainer.train_swe_async_grpo import TrainArgs, build_trainer, configure_trackio, dashboard_command

    trackio_dir = configure_trackio(argv)  # the caller ran it before importing this module; this returns the dir
    from transformers import AutoTokenizer

    from trainer.config import parse_train_args

    script, training = parse_train_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(script.model_name_or_path)
    worker = EngineSampleWorker(engine_url, tokenizer, num_generations=4, max_tokens=12)
    trainer = build_trainer(TrainArgs(script, training), worker, LocalEngineWeightTransfer(engine_url))
    trainer.train()
    with open(os.path.join(training.output_dir, "log_history.json"), "w") as handle:
        json.dump(trainer.state.log_history, handle)
    print(dashboard_command(trackio_dir, training.project), flush=True)


# What a chart has drawn: per plot container, its metric, the legend's run names and colours, and how many canvas
# pixels carry a run's colour (axes and grid are grey, so only plotted data counts).
CHART_PIXELS_JS = r"""
JSON.stringify([...document.querySelectorAll('.plot-container[data-metric]')].map(el => {
  const canvas = el.querySelector('canvas');
  const colours = [...el.querySelectorAll('.legend-dot')].map(d => getComputedStyle(d).backgroundColor
    .match(/\d+/g).slice(0, 3).map(Number));
  let hits = 0;
  if (canvas && colours.length) {
    const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 0; i < px.length; i += 4) {
      if (px[i + 3] > 0 && colours.some(c => Math.abs(px[i] - c[0]) + Math.abs(px[i + 1] - c[1])
          + Math.abs(px[i + 2] - c[2]) < 40)) hits++;
    }
  }
  return {metric: el.dataset.metric, runs: [...el.querySelectorAll('.legend-label')].map(l => l.textContent.trim()),
          data_pixels: hits};
}))
"""


async def chart_pixels(url: str, *, chromium: str = "chromium", timeout_s: float = 90.0,
                       want: tuple[str, ...] = ()) -> list[dict]:
    """Open `url` in headless Chromium and read the dashboard's charts over the DevTools protocol (aiohttp
    websocket); poll until every metric in `want` has drawn data pixels or `timeout_s` passes."""
    import asyncio
    import json
    import os
    import socket
    import tempfile

    import aiohttp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    proc = await asyncio.create_subprocess_exec(
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--window-size=1280,2400", f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
    charts: list[dict] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                        pages = [t for t in await response.json() if t["type"] == "page"]
                    if pages:
                        break
                except aiohttp.ClientError:
                    pass
                if loop.time() > deadline:
                    raise TimeoutError("chromium's DevTools endpoint never came up")
                await asyncio.sleep(0.3)
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                ids = iter(range(1, 1_000_000))

                async def call(method: str, **params):
                    msg_id = next(ids)
                    await ws.send_json({"id": msg_id, "method": method, "params": params})
                    while True:
                        message = await asyncio.wait_for(ws.receive_json(), timeout=30)
                        if message.get("id") == msg_id:
                            return message

                await call("Page.navigate", url=url)
                while loop.time() < deadline:
                    await asyncio.sleep(1.0)
                    answer = await call("Runtime.evaluate", expression=CHART_PIXELS_JS, returnByValue=True)
                    value = answer.get("result", {}).get("result", {}).get("value")
                    charts = json.loads(value) if value else []
                    drawn = {c["metric"] for c in charts if c["data_pixels"] > 0}
                    if charts and all(metric in drawn for metric in want):
                        break
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, 9)
        await proc.wait()
        import shutil

        shutil.rmtree(profile, ignore_errors=True)
    return charts
