"""The interception gate: per-rollout endpoints whose chat calls the rollout worker answers.

Agents may speak OpenAI chat completions (`…/v1/chat/completions`), Anthropic Messages (`…/v1/messages`, Claude
Code) or OpenAI Responses (`…/v1/responses`, Codex); the worker always receives the same OpenAI-chat
`InterceptedRequest` and replies with an OpenAI assistant message (`control_plane/dialects/` translates both ways).

    server = InterceptionServer(host="127.0.0.1", port=0, config=GateConfig(), served_model_name="policy")
    await server.start()                              # server.url -> "http://127.0.0.1:PORT"
    rollout = await server.open_rollout("r1")         # .base_url (…/rollout/r1/v1), .api_key (opens r1 only),
                                                      # .root_url (no /v1: the Anthropic SDK's base URL)
    req = await rollout.next_request(timeout=5.0)     # InterceptedRequest; asyncio.TimeoutError / RolloutClosed
    await req.reply({"role": "assistant", "content": "...", "tool_calls": [...]}, finish_reason="tool_calls",
                    usage={"prompt_tokens": 1, "completion_tokens": 2})   # or: await req.fail(400, "...", code=...)
    await rollout.close(); await server.stop()
"""

from .config import GateConfig
from .dialects import DialectName
from .endpoint import RolloutEndpoint
from .errors import GateError, RolloutClosed
from .rollout import InterceptedRequest, RolloutHandle
from .server import InterceptionServer

__all__ = [
    "DialectName",
    "GateConfig",
    "GateError",
    "InterceptedRequest",
    "InterceptionServer",
    "RolloutClosed",
    "RolloutEndpoint",
    "RolloutHandle",
]
