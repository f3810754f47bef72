"""The Space's status page: `python -m space_app.status --port 7860 --state-dir DIR`.

What `start.sh` writes in the state directory is all it reads:

* `state`: one word (`starting`, `vllm_starting`, `training`, `finished`, `failed`, `refused`), `detail`: one line;
* `train.log`: the trainer's output; the newest `[intercept-rl] step N/M reward=… ratio=…` line (trainer/progress.py's
  step line) gives step, reward and the other numbers on it.

Routes: `GET /` (HTML: run state, step, reward, link to Trackio), `GET /api/status` (the same as JSON, what
`intercept-rl space deploy --follow` polls), `GET /healthz`. `/rollout/…` is forwarded to the gate on loopback when
`INTERCEPT_RL_GATE_PORT` is set, so a sandbox outside the Space (a remote sandbox backend) reaches the gate at
`https://<space host>/rollout/<id>/v1` (the gate itself checks each rollout's key; this proxy caps body size and
concurrency). No secret is read or shown here.

`python -m space_app.status --pause-space` pauses this Space (`SPACE_ID`) with the token in `HF_TOKEN` (environment
only), so a finished GPU Space stops billing.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import re
import sys
import time
from pathlib import Path

STEP_LINE = re.compile(r"\[intercept-rl\] step (\d+)/(\d+)(.*)")
KEY_VALUE = re.compile(r"([\w/]+)=(-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|inf)(?=\s|$)")  # `-` (no value yet) is skipped
MAX_PROXY_BODY = 16 * 1024 * 1024  # the gate's own default max_body_bytes
MAX_PROXY_CONCURRENCY = 256
_HOP_HEADERS = {"host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                "proxy-authorization", "proxy-authenticate", "content-length"}


def _tail_lines(path: Path, max_bytes: int = 256 * 1024) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def read_status(state_dir: Path, environ: dict[str, str] | None = None) -> dict:
    """The run's status from the state directory (missing files: `starting`)."""
    environ = os.environ if environ is None else environ

    def read(name: str, default: str = "") -> str:
        try:
            return (state_dir / name).read_text(encoding="utf-8").strip()
        except OSError:
            return default

    status: dict = {"state": read("state", "starting") or "starting", "detail": read("detail"),
                    "step": None, "max_steps": None, "reward": None, "metrics": {}}
    for line in reversed(_tail_lines(state_dir / "train.log")):
        match = STEP_LINE.search(line)
        if match:
            status["step"], status["max_steps"] = int(match.group(1)), int(match.group(2))
            metrics = {k: float(v) for k, v in KEY_VALUE.findall(match.group(3))}
            status["metrics"] = metrics
            status["reward"] = metrics.get("reward", metrics.get("rollout_reward"))
            break
    trackio_space = environ.get("INTERCEPT_RL_TRACKIO_SPACE_ID", "")
    project = environ.get("INTERCEPT_RL_TRACKIO_PROJECT", "intercept-rl")
    status["trackio"] = {"project": project,
                         "url": f"https://huggingface.co/spaces/{trackio_space}" if trackio_space else None}
    status["space_id"] = environ.get("SPACE_ID")
    return status


def render_html(status: dict) -> str:
    def esc(value) -> str:
        return html.escape("" if value is None else str(value))

    trackio = status["trackio"]
    if trackio["url"]:
        link = f'<a href="{esc(trackio["url"])}">{esc(trackio["url"])}</a> (project {esc(trackio["project"])})'
    else:
        link = (f"local to this container (project {esc(trackio['project'])}); deploy with --trackio-space-id to "
                "get a dashboard Space")
    step = "—" if status["step"] is None else f"{status['step']} / {status['max_steps']}"
    reward = "—" if status["reward"] is None else f"{status['reward']:.4g}"
    metrics = ", ".join(f"{esc(k)}={v:.4g}" for k, v in status["metrics"].items()) or "—"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>intercept-rl</title><meta http-equiv="refresh" content="15">
<style>body{{font-family:sans-serif;max-width:46rem;margin:2rem auto}}td{{padding:.2rem 1rem}}</style></head>
<body><h1>intercept-rl training Space</h1>
<table>
<tr><td>run state</td><td><b id="state">{esc(status['state'])}</b> {esc(status['detail'])}</td></tr>
<tr><td>step</td><td id="step">{esc(step)}</td></tr>
<tr><td>reward</td><td id="reward">{esc(reward)}</td></tr>
<tr><td>last metrics</td><td>{metrics}</td></tr>
<tr><td>Trackio</td><td>{link}</td></tr>
</table>
<p>JSON: <a href="api/status">api/status</a>. This page refreshes every 15 s.</p></body></html>
"""


def build_app(state_dir: Path, gate_port: int | None = None):
    from aiohttp import ClientError, ClientSession, ClientTimeout, web

    semaphore = asyncio.Semaphore(MAX_PROXY_CONCURRENCY)
    session_key = web.AppKey("session", ClientSession)

    async def index(_request):
        return web.Response(text=render_html(read_status(state_dir)), content_type="text/html")

    async def api_status(_request):
        return web.json_response(read_status(state_dir))

    async def healthz(_request):
        return web.json_response({"ok": True})

    async def proxy(request: web.Request):
        if gate_port is None:
            return web.json_response({"error": {"message": "the gate is not exposed on this Space",
                                                "type": "not_found"}}, status=404)
        if request.content_length is not None and request.content_length > MAX_PROXY_BODY:
            return web.json_response({"error": {"message": "request body too large", "type": "invalid_request_error"}},
                                     status=413)
        async with semaphore:
            body = await request.read()
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
            url = f"http://127.0.0.1:{gate_port}{request.rel_url}"
            try:
                upstream_cm = request.app[session_key].request(request.method, url, headers=headers, data=body)
                upstream = await upstream_cm.__aenter__()
            except ClientError:
                return web.json_response({"error": {"message": "the gate is not reachable", "type": "server_error"}},
                                         status=502)
            try:
                response = web.StreamResponse(status=upstream.status, headers={
                    k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS})
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
            finally:
                await upstream_cm.__aexit__(None, None, None)

    async def gate_session(app):
        """The cleanup context (one idiom for every aiohttp app of ours): the session to the gate lives as the app."""
        app[session_key] = ClientSession(timeout=ClientTimeout(total=None, sock_connect=10))
        try:
            yield
        finally:
            await app[session_key].close()

    app = web.Application(client_max_size=MAX_PROXY_BODY)
    app.router.add_get("/", index)
    app.router.add_get("/api/status", api_status)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/rollout/{tail:.*}", proxy)
    app.cleanup_ctx.append(gate_session)
    return app


def pause_this_space(environ: dict[str, str] | None = None) -> int:
    """Pause the Space this runs in (`SPACE_ID`, token from `HF_TOKEN`); 0 when paused or nothing to do."""
    environ = os.environ if environ is None else environ
    space_id = environ.get("SPACE_ID")
    if not space_id:
        print("[space] not on a Space (no SPACE_ID): nothing to pause", flush=True)
        return 0
    if not environ.get("HF_TOKEN"):
        print("[space] no HF_TOKEN secret: cannot pause the Space; pause it on the Hub", flush=True)
        return 1
    from huggingface_hub import HfApi

    try:
        HfApi().pause_space(space_id)  # the token comes from HF_TOKEN in the environment
    except Exception as error:  # noqa: BLE001 - report, never with the token
        print(f"[space] pausing {space_id} failed: {type(error).__name__}", flush=True)
        return 1
    print(f"[space] paused {space_id}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m space_app.status", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "7860")))
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--state-dir", default=os.environ.get("INTERCEPT_RL_STATE_DIR", "/tmp/intercept-rl-space"))
    parser.add_argument("--pause-space", action="store_true", help="pause this Space (SPACE_ID) and exit")
    args = parser.parse_args(argv)
    if args.pause_space:
        return pause_this_space()
    from aiohttp import web

    gate_port = os.environ.get("INTERCEPT_RL_GATE_PORT")
    app = build_app(Path(args.state_dir), int(gate_port) if gate_port else None)
    print(f"[space] status page on {args.host}:{args.port} ({time.strftime('%H:%M:%S')})", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
