"""space_app/status.py: the status read from start.sh's files, the page, the /rollout proxy to the gate, pausing."""

from __future__ import annotations

import json
import sys
import types

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from space_app import status as st


def write_state(tmp_path, state=None, detail="", log_lines=()):
    if state is not None:
        (tmp_path / "state").write_text(state + "\n")
        (tmp_path / "detail").write_text(detail + "\n")
    (tmp_path / "train.log").write_text("".join(line + "\n" for line in log_lines))


def test_status_from_files_newest_step_line_wins(tmp_path):
    write_state(tmp_path, "training", "trainer on GPUs 1,2,3", [
        "some library noise", "[intercept-rl] step 1/10 reward=0.1 ratio=1 kl=0",
        "[intercept-rl] step 2/10 rollout_reward=0.25 ratio=0.98 kl=0.002 rollouts=16", "more noise"])
    status = st.read_status(tmp_path, environ={"INTERCEPT_RL_TRACKIO_PROJECT": "proj"})
    assert status["state"] == "training" and status["detail"] == "trainer on GPUs 1,2,3"
    assert (status["step"], status["max_steps"], status["reward"]) == (2, 10, 0.25)
    assert status["metrics"]["kl"] == 0.002 and status["metrics"]["rollouts"] == 16
    assert status["trackio"] == {"project": "proj", "url": None}


def test_the_trainers_own_step_line_is_understood(tmp_path):
    """Pinned against trainer/progress.py's formatter: a change of its step line shows up here."""
    from trainer.progress import ProgressReporter

    line = ProgressReporter(show_bar=False).format_line(3, 10, {
        "loss": 0.1, "reward": 0.375, "ratio": 1.0, "kl": 2e-05, "rollout/rollouts_per_s": 0.5,
        "rollout/forks_total": 2})
    write_state(tmp_path, "training", "", ["noise", line])
    status = st.read_status(tmp_path, environ={})
    assert (status["step"], status["max_steps"], status["reward"]) == (3, 10, 0.375)
    assert status["metrics"]["kl"] == 2e-05 and status["metrics"]["rollouts/s"] == 0.5
    assert "tokens" not in status["metrics"]  # printed as `-` (no value): skipped


def test_missing_files_mean_starting(tmp_path):
    status = st.read_status(tmp_path / "nothing-yet", environ={})
    assert status["state"] == "starting" and status["step"] is None and status["reward"] is None


def test_page_escapes_what_it_shows(tmp_path):
    write_state(tmp_path, "failed", "<script>alert(1)</script>")
    page = st.render_html(st.read_status(tmp_path, environ={"INTERCEPT_RL_TRACKIO_SPACE_ID": "someone/dash"}))
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert 'href="https://huggingface.co/spaces/someone/dash"' in page


@pytest.fixture
async def gate():
    """A stand-in gate: echoes what it got, and streams SSE for /stream."""
    seen = []

    async def handler(request: web.Request):
        body = await request.read()
        seen.append({"path": request.path_qs, "method": request.method, "auth": request.headers.get("Authorization"),
                     "body": body})
        if request.path.endswith("/stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for i in range(3):
                await response.write(f"data: {i}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            return response
        return web.json_response({"ok": True, "len": len(body)}, status=201)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app)
    await server.start_server()
    yield server, seen
    await server.close()


async def test_rollout_paths_are_forwarded_to_the_gate_with_auth_and_streaming(tmp_path, gate):
    server, seen = gate
    async with TestClient(TestServer(st.build_app(tmp_path, gate_port=server.port))) as client:
        response = await client.post("/rollout/r1/v1/chat/completions?x=1", data=b'{"a":1}',
                                     headers={"Authorization": "Bearer irl-key", "Content-Type": "application/json"})
        assert response.status == 201 and (await response.json()) == {"ok": True, "len": 7}
        assert seen[-1] == {"path": "/rollout/r1/v1/chat/completions?x=1", "method": "POST",
                            "auth": "Bearer irl-key", "body": b'{"a":1}'}
        response = await client.post("/rollout/r1/v1/stream", data=b"{}")
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert (await response.text()).count("data:") == 4
        response = await client.post("/rollout/r1/v1/chat/completions", data=b"x" * (st.MAX_PROXY_BODY + 1))
        assert response.status == 413
        assert len(seen) == 2  # the oversized body never reached the gate
        response = await client.get("/api/status")
        assert (await response.json())["state"] == "starting"


async def test_an_unreachable_gate_is_a_502(tmp_path):
    from tests.space_app.test_space_start import free_port

    async with TestClient(TestServer(st.build_app(tmp_path, gate_port=free_port()))) as client:
        response = await client.post("/rollout/r1/v1/chat/completions", data=b"{}")
        assert response.status == 502 and (await response.json())["error"]["type"] == "server_error"


async def test_without_a_gate_port_rollout_paths_are_404(tmp_path):
    async with TestClient(TestServer(st.build_app(tmp_path, gate_port=None))) as client:
        response = await client.post("/rollout/r1/v1/chat/completions", data=b"{}")
        assert response.status == 404
        response = await client.get("/healthz")
        assert response.status == 200


def test_pause_this_space(monkeypatch, capsys):
    assert st.pause_this_space({}) == 0  # not on a Space
    assert st.pause_this_space({"SPACE_ID": "someone/test"}) == 1  # no token: says so
    paused = []
    fake = types.ModuleType("huggingface_hub")
    fake.HfApi = lambda: types.SimpleNamespace(pause_space=paused.append)
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    assert st.pause_this_space({"SPACE_ID": "someone/test", "HF_TOKEN": "hf_FAKE_do_not_print"}) == 0
    assert paused == ["someone/test"]
    assert "hf_FAKE_do_not_print" not in capsys.readouterr().out


def test_status_json_is_serializable(tmp_path):
    write_state(tmp_path, "finished", "done", ["[intercept-rl] step 3/3 reward=nan"])
    json.dumps(st.read_status(tmp_path, environ={}))
