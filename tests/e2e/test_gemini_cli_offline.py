"""Gemini CLI, launched as its launcher launches it, contacts nothing but the gate (slow; needs strace).

On the host, without a sandbox (the sandbox would hide any attempt): `strace -f -e trace=%network` records every
connect/sendto/sendmsg of the CLI and its children while it runs a whole scripted episode through the real gate (one
shell call, then a final answer). Every address it contacted must be the gate's loopback port: no DNS query, no
update check, no telemetry, no login.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from rollout_worker.environment.agents import GeminiCliLauncher

pytestmark = pytest.mark.slow
_ADDRESS = re.compile(r"(connect|sendto|sendmsg)\(\d+, \{sa_family=(AF_INET6?|AF_UNIX)[^}]*\}")
_INET = re.compile(r'sin6?_port=htons\((\d+)\), (?:sin_addr=inet_addr|inet_pton\(AF_INET6)?\(?"([^"]+)"')


class _HostSandbox:
    def __init__(self, home: Path, workdir: Path) -> None:
        self.home, self.workdir = str(home), str(workdir)


def contacted(trace: str) -> set[str]:
    """Every address a traced call named: `host:port` for IP sockets, the path for unix sockets."""
    out = set()
    for line in trace.splitlines():
        match = _ADDRESS.search(line)
        if not match:
            continue
        if match.group(2) == "AF_UNIX":
            out.add("unix:" + (re.search(r'sun_path="([^"]*)"', line) or [None, "?"])[1])
        else:
            inet = _INET.search(line)
            out.add(f"{inet.group(2)}:{inet.group(1)}" if inet else line.strip())
    return out


@pytest.mark.timeout(300)
async def test_gemini_cli_contacts_only_the_gate(make_gate, task, tmp_path):
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    launcher = GeminiCliLauncher()
    gate = await make_gate()
    rollout = await gate.open_rollout("offline", report_truncation=launcher.report_truncation)
    home = tmp_path / "home"
    command = launcher.prepare(_HostSandbox(home, task.repo_dir), rollout.endpoint, task)
    for path, data in command.files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    trace = tmp_path / "strace.txt"
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", **command.env}
    proc = await asyncio.create_subprocess_exec(
        "strace", "-f", "-qq", "-e", "trace=%network", "-e", "signal=none", "-o", str(trace), *command.argv,
        cwd=task.repo_dir, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True)
    try:
        first = await rollout.next_request(timeout=120)
        call = {"id": "call_1", "type": "function", "function": {
            "name": "run_shell_command", "arguments": json.dumps({"command": "echo hi > hello.txt"})}}
        assert await first.reply({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls")
        second = await rollout.next_request(timeout=120)
        assert await second.reply({"role": "assistant", "content": "All done."}, "stop")
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    assert proc.returncode == 0, output.decode(errors="replace")[-3000:]
    assert (Path(task.repo_dir) / "hello.txt").read_text() == "hi\n"  # the episode really ran its tool call
    text = trace.read_text()
    addresses = contacted(text)
    # bash (the shell tool) asks glibc for the user's passwd entry, which tries the local name-service cache socket
    # first (absent here: ENOENT) and then reads /etc/passwd: no network.
    addresses.discard("unix:/var/run/nscd/socket")
    # A DNS query would be a connect/sendto to a name server (port 53) and show up here. (Node's c-ares reads
    # /etc/resolv.conf when it initialises, whether or not anything is looked up: that is not a lookup.)
    assert addresses == {f"127.0.0.1:{gate.port}"}, sorted(addresses)
