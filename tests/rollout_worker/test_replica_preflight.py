"""Checks on several `--engine-url`s before anything starts, against real HTTP servers that answer `/v1/models`
(and nothing else: what the check reads), and the engine client's transport failure that takes a replica out."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from intercept_common.errors import ConfigError
from rollout_worker.cli import RolloutsArguments, main
from rollout_worker.factory import EngineNotServingError, served_model_name_for_replicas
from rollout_worker.protocols import EngineUnreachableError
from rollout_worker.serving.engine_client import EngineClient


def _models_server(name: str, max_model_len: int):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = json.dumps({"data": [{"id": name, "max_model_len": max_model_len}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def servers():
    made = []

    def make(name="policy", max_model_len=4096):
        server, url = _models_server(name, max_model_len)
        made.append(server)
        return url

    yield make
    for server in made:
        server.shutdown()
        server.server_close()


def test_replicas_that_agree_give_the_served_name(servers):
    a, b = servers("qwen"), servers("qwen")
    assert served_model_name_for_replicas("policy", [a, b]) == "qwen"  # the default name: each one's only model


def test_a_replica_serving_another_model_is_named(servers):
    a, b = servers("qwen"), servers("llama")
    with pytest.raises(EngineNotServingError, match=rf"the engine at {b} serves 'llama' but the one at {a} serves"):
        served_model_name_for_replicas("policy", [a, b])


def test_replicas_with_different_max_model_len_are_refused(servers):
    a, b = servers(max_model_len=4096), servers(max_model_len=2048)
    with pytest.raises(EngineNotServingError, match=rf"{b} serves max_model_len 2048 but the one at {a} serves 4096"):
        served_model_name_for_replicas("policy", [a, b])


def test_engine_url_forms():
    """What argparse (nargs +), a YAML list and a YAML string give `RolloutsArguments` (built directly: the parser's
    own import of transformers would cost this test ~25 s on a loaded box)."""
    def urls(value):
        return RolloutsArguments(engine_url=value).engine_urls

    assert urls(["http://a:1", "http://b:2/,http://c:3"]) == ["http://a:1", "http://b:2", "http://c:3"]
    assert urls("http://a:1, http://b:2") == ["http://a:1", "http://b:2"]  # a config file's string
    assert urls(None) == []
    for value, message in ((["http://a", "http://a/"], "lists http://a twice"),
                           (["a:8000"], "not an http:// or https:// URL"), ([","], "names no URL")):
        with pytest.raises(ConfigError, match=message):
            urls(value)


def test_repeated_engine_url_flag_is_one_line(capsys):
    code = main(["--engine-url", "http://a", "--engine-url=http://b"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("intercept-rl rollouts: --engine-url is given more than once")


async def test_connection_refused_on_every_try_is_unreachable():
    async with EngineClient("http://127.0.0.1:9", "policy", max_retries=1, backoff_s=0.01) as client:
        with pytest.raises(EngineUnreachableError, match="127.0.0.1:9"):
            await client.complete([1, 2], max_tokens=1)


def test_the_all_down_grace_is_checked_with_the_config():
    from rollout_worker.config import WorkerConfig

    assert WorkerConfig().engine_down_grace_s == 60.0
    with pytest.raises(ConfigError, match="engine_down_grace_s must be >= 0"):
        WorkerConfig(engine_down_grace_s=-1)
