"""`intercept-rl space deploy`: create, configure and upload an intercept-rl training Space with `HfApi` only.

The deployment is a *plan*: an ordered list of `HfApi` calls built from the options before anything is called.
`--dry-run` prints the plan (secrets by name only, never their values) and calls nothing; a real deploy runs the
same list. Order: create the Space (private unless `--public`; the visibility is also enforced on an existing Space) → its secrets (`HF_TOKEN`, a freshly generated gate
secret) → its variables (model, training options, Trackio) → the hardware → one commit with `space_app/` (Dockerfile
and Space card at the root) and the package. `--follow` then follows the build and run and pauses the Space when
training ends (or fails), so a GPU Space does not bill idle hours.
"""

from __future__ import annotations

import fnmatch
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .options import (  # noqa: F401 - re-exported: the deploy API's names
    DEFAULT_HARDWARE, DEFAULT_MODEL, SPACE_MAX_MODEL_LEN, DeployOptions, PlanError)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SPACE_DIR = Path(__file__).resolve().parent

APP_PORT = 7860

HF_TOKEN_SECRET = "HF_TOKEN"
VARIABLE_PREFIX = "INTERCEPT_RL_"  # every variable a deploy sets starts with it; stale ones are deleted
GATE_SECRET = "INTERCEPT_RL_GATE_SECRET"

# What the Space repository holds: the Space's own files at its root (Docker SDK: Dockerfile + README.md card), then
# the package at its repository paths, so the Dockerfile builds the same context here (`docker build -f
# space_app/Dockerfile .`) and on the Space.
SPACE_ROOT_FILES = {"Dockerfile": "space_app/Dockerfile", "README.md": "space_app/README.md"}
PACKAGE_FILES = ["pyproject.toml", "intercept_rl_cli.py", "LICENSE"]
PACKAGE_DIRS = ["control_plane", "rollout_worker", "trainer", "local_engine", "doctor", "intercept_common",
                "space_app", "locks"]
EXCLUDE = ["__pycache__", "*.pyc", "*.pyo", "*.egg-info", ".*", "*.db", "*.log"]


@dataclass(frozen=True)
class SecretValue:
    """A secret that is passed to `HfApi` but never printed: `repr`/`str` show only its name and origin."""

    name: str
    origin: str
    value: str | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        return f"<secret {self.name}: {self.origin}>"

    __str__ = __repr__


@dataclass(frozen=True)
class UploadFile:
    """One file of the Space's repository: where it goes, where it comes from, its size (shown by the plan)."""

    path_in_repo: str
    local_path: Path
    size: int


@dataclass
class ApiCall:
    """One `HfApi` method call. Values that are `SecretValue`s print as their name."""

    method: str
    kwargs: dict[str, Any]
    note: str = ""
    only_if_paused: bool = False  # run only when get_space_runtime says PAUSED (checked at run time)
    stale_variables_of: tuple[str, ...] | None = None  # delete each INTERCEPT_RL_* variable not in this tuple

    def render(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.kwargs.items())
        text = f"HfApi.{self.method}({args})"
        return f"{text}    # {self.note}" if self.note else text

    def resolved_kwargs(self) -> dict[str, Any]:
        out = {}
        for key, value in self.kwargs.items():
            if isinstance(value, SecretValue):
                if value.value is None:
                    raise PlanError(f"secret {value.name} has no value ({value.origin})")
                value = value.value
            out[key] = value
        return out


@dataclass
class Plan:
    """The `HfApi` calls and uploads a deploy makes, in order: printed by `--dry-run`, run otherwise."""

    options: DeployOptions
    calls: list[ApiCall]
    uploads: list[UploadFile]

    def render(self, dry_run: bool) -> str:
        opts = self.options
        head = "DRY RUN: nothing below is called." if dry_run else "Deploying:"
        lines = [
            f"intercept-rl space deploy: {head}",
            f"Space {opts.space_id}: {'private' if opts.private else 'PUBLIC'}, sdk docker, app_port {APP_PORT}, "
            f"hardware {opts.hardware}",
            "secrets (values never printed): " + ", ".join(self.secret_names()),
            "",
            "HfApi calls, in order:",
        ]
        lines += [f"{i:3d}. {call.render()}" for i, call in enumerate(self.calls, 1)]
        total = sum(item.size for item in self.uploads)
        lines += ["", f"upload list ({len(self.uploads)} files, {total / 1e6:.2f} MB), path in the Space <- local path:"]
        for item in self.uploads:
            local = os.path.relpath(item.local_path, PROJECT_ROOT)
            lines.append(f"  {item.path_in_repo}" + ("" if local == item.path_in_repo else f"  <- {local}"))
        if not opts.private:
            lines += ["", "WARNING: --public: anyone can open the status page and reach the gate's URL (each rollout "
                      "still needs its own key)."]
        if opts.allow_unsandboxed:
            lines += ["", "WARNING: --allow-unsandboxed: if bubblewrap cannot start in the Space, model-written code "
                      "runs WITHOUT a sandbox, with the Space's secrets (HF_TOKEN) in reach."]
        return "\n".join(lines)

    def secret_names(self) -> list[str]:
        return [call.kwargs["key"] for call in self.calls if call.method == "add_space_secret"]


def _excluded(parts: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in EXCLUDE)


def upload_list(root: Path = PROJECT_ROOT) -> list[UploadFile]:
    """Every file the Space repository receives, sorted, with its path in the Space and its local source."""
    items: dict[str, Path] = {}
    for path_in_repo, local in SPACE_ROOT_FILES.items():
        items[path_in_repo] = root / local
    for name in PACKAGE_FILES:
        if (root / name).is_file():
            items[name] = root / name
    for directory in PACKAGE_DIRS:
        for path in sorted((root / directory).rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not path.is_symlink() and not _excluded(rel.parts):
                items[rel.as_posix()] = path
    missing = [p for p, local in items.items() if not local.is_file()]
    if missing:
        raise PlanError(f"missing files for the Space: {', '.join(missing)}")
    return [UploadFile(p, local, local.stat().st_size) for p, local in sorted(items.items())]


def resolve_hf_token(environ: dict[str, str] | None = None) -> SecretValue:
    """The user's token: `HF_TOKEN` from the environment, else the HF login (`hf auth login`); never printed."""
    environ = os.environ if environ is None else environ
    if environ.get("HF_TOKEN"):
        return SecretValue(HF_TOKEN_SECRET, "from the environment (HF_TOKEN)", environ["HF_TOKEN"])
    try:
        from huggingface_hub import get_token

        token = get_token()
    except Exception:  # noqa: BLE001 - a broken login is the same as none here
        token = None
    if token:
        return SecretValue(HF_TOKEN_SECRET, "from the HF login", token)
    return SecretValue(HF_TOKEN_SECRET, "MISSING: set HF_TOKEN or run `hf auth login`", None)


def space_variables(options: DeployOptions) -> dict[str, str]:
    """The Space's variables (not secret): what `start.sh` reads."""
    name = options.space_id.partition("/")[2]
    variables = {
        "INTERCEPT_RL_MODEL": options.model,
        "INTERCEPT_RL_SERVED_MODEL_NAME": options.served_model_name,
        "INTERCEPT_RL_MAX_MODEL_LEN": str(options.max_model_len),
        "INTERCEPT_RL_DTYPE": options.dtype,
        "INTERCEPT_RL_TRACKIO_PROJECT": options.trackio_project or name,
        "INTERCEPT_RL_PAUSE_WHEN_DONE": "1" if options.pause_when_done else "0",
    }
    if options.train_args.strip():
        variables["INTERCEPT_RL_TRAIN_ARGS"] = options.train_args.strip()
    if options.trackio_space_id:
        variables["INTERCEPT_RL_TRACKIO_SPACE_ID"] = options.trackio_space_id
    if options.allow_unsandboxed:
        variables["INTERCEPT_RL_ALLOW_UNSANDBOXED"] = "1"
    return variables


def build_plan(options: DeployOptions, *, hf_token: SecretValue | None = None, gate_secret: SecretValue | None = None,
               root: Path = PROJECT_ROOT) -> Plan:
    """The ordered `HfApi` calls of a deployment. Secrets are `SecretValue`s (name only in every printout)."""
    hf_token = hf_token if hf_token is not None else resolve_hf_token()
    gate_secret = gate_secret if gate_secret is not None else SecretValue(
        GATE_SECRET, "freshly generated (secrets.token_urlsafe(32))", secrets.token_urlsafe(32))
    repo = options.space_id
    calls = [
        ApiCall("create_repo", {"repo_id": repo, "repo_type": "space", "space_sdk": "docker",
                                "private": options.private, "exist_ok": True}),
        ApiCall("update_repo_settings", {"repo_id": repo, "repo_type": "space", "private": options.private},
                "an existing Space keeps its visibility on create_repo: enforce the one asked for"),
        ApiCall("add_space_secret", {"repo_id": repo, "key": HF_TOKEN_SECRET, "value": hf_token},
                "the trainer pushes checkpoints / Trackio; the Space pauses itself with it"),
        ApiCall("add_space_secret", {"repo_id": repo, "key": GATE_SECRET, "value": gate_secret},
                "server secret the gate derives per-rollout keys from"),
    ]
    variables = space_variables(options)
    calls += [ApiCall("add_space_variable", {"repo_id": repo, "key": key, "value": value})
              for key, value in variables.items()]
    calls.append(ApiCall("delete_space_variable", {"repo_id": repo, "key": "<each stale INTERCEPT_RL_* variable>"},
                         "variables an earlier deploy set and this one does not (e.g. INTERCEPT_RL_ALLOW_UNSANDBOXED), "
                         "found with HfApi.get_space_variables", stale_variables_of=tuple(variables)))
    calls.append(ApiCall("request_space_hardware", {"repo_id": repo, "hardware": options.hardware}))
    uploads = upload_list(root)
    calls.append(ApiCall("create_commit", {"repo_id": repo, "repo_type": "space",
                                           "operations": _OperationsSummary(len(uploads)),
                                           "commit_message": options.commit_message},
                         "one commit with every file of the upload list (triggers the build)"))
    calls.append(ApiCall("restart_space", {"repo_id": repo},
                         "only if HfApi.get_space_runtime says PAUSED: a Space that paused itself after an earlier "
                         "run does not restart on a new commit", only_if_paused=True))
    return Plan(options, calls, uploads)


class _OperationsSummary:
    """Stands for the `CommitOperationAdd` list in a printed plan."""

    def __init__(self, count: int):
        self.count = count

    def __repr__(self) -> str:
        return f"[CommitOperationAdd x {self.count}: the upload list below]"


def run_plan(plan: Plan, api, *, log: Callable[[str], None] = print) -> None:
    """Call `api` (an `HfApi`) for every step of the plan, in order."""
    from huggingface_hub import CommitOperationAdd

    for i, call in enumerate(plan.calls, 1):
        log(f"[{i}/{len(plan.calls)}] {call.render()}")
        kwargs = call.resolved_kwargs()
        if call.stale_variables_of is not None:
            stale = sorted(key for key in api.get_space_variables(kwargs["repo_id"]) or {}
                           if key.startswith(VARIABLE_PREFIX) and key not in call.stale_variables_of)
            for key in stale:
                log(f"    HfApi.delete_space_variable(repo_id={kwargs['repo_id']!r}, key={key!r})")
                api.delete_space_variable(repo_id=kwargs["repo_id"], key=key)
            if not stale:
                log("    none")
            continue
        if call.only_if_paused:
            stage = _stage(api.get_space_runtime(kwargs["repo_id"]))
            if stage != "PAUSED":
                log(f"    skipped: the Space is {stage}, not PAUSED")
                continue
        if call.method == "create_commit":
            kwargs["operations"] = [CommitOperationAdd(path_in_repo=item.path_in_repo,
                                                       path_or_fileobj=str(item.local_path))
                                    for item in plan.uploads]
        getattr(api, call.method)(**kwargs)


# ---------------------------------------------------------------------------------------------------------------
# --follow

FAILED_STAGES = {"BUILD_ERROR", "RUNTIME_ERROR", "CONFIG_ERROR"}
DONE_STAGES = {"PAUSED", "STOPPED"}  # done only once the Space was seen building or running since the deploy


def _stage(runtime) -> str:
    return str(getattr(runtime, "stage", "UNKNOWN")).removeprefix("SpaceStage.")


def fetch_run_status(api, space_id: str, token: str | None) -> dict | None:
    """The Space's `/api/status` JSON (state, step, reward), or None while it does not answer."""
    from huggingface_hub import get_session

    try:
        host = api.space_info(space_id).host
        if not host:
            return None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = get_session().get(f"{host.rstrip('/')}/api/status", headers=headers, timeout=15)
        return response.json() if response.status_code == 200 else None
    except Exception:  # noqa: BLE001 - following is best effort; the next poll tries again
        return None


def follow(api, space_id: str, *, token: str | None = None, poll_s: float = 30.0, timeout_s: float | None = None,
           log: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep,
           status_fn: Callable[[], dict | None] | None = None) -> int:
    """Follow the Space's build and run; pause it when training ends or fails. 0: training finished."""
    status_fn = status_fn or (lambda: fetch_run_status(api, space_id, token))
    start = time.monotonic()
    last_stage, last_line, seen_active = None, None, False
    paused_limit_s = 600.0  # still PAUSED this long after the deploy: it was not restarted
    while True:
        stage = _stage(api.get_space_runtime(space_id))
        if stage != last_stage:
            log(f"space {space_id}: {stage}")
            last_stage = stage
        seen_active = seen_active or stage not in DONE_STAGES
        if stage in DONE_STAGES and seen_active:
            log("the Space is paused/stopped: nothing more to follow")
            return 0
        if stage in DONE_STAGES and time.monotonic() - start > paused_limit_s:
            log(f"the Space stayed {stage} for {paused_limit_s:.0f} s after the deploy; restart it on the Hub")
            return 1
        if stage in FAILED_STAGES:
            log(f"the Space failed ({stage}); pausing it. See its logs on the Hub.")
            _pause(api, space_id, log)
            return 1
        if stage == "RUNNING":
            status = status_fn() or {}
            line = _status_line(status)
            if line and line != last_line:
                log(line)
                last_line = line
            if status.get("state") in ("finished", "failed"):
                _pause(api, space_id, log)
                return 0 if status["state"] == "finished" else 1
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            log(f"--follow: gave up after {timeout_s:.0f} s; the Space keeps running (pause it yourself)")
            return 1
        sleep(poll_s)


def _status_line(status: dict) -> str:
    if not status:
        return ""
    parts = [f"run: {status.get('state', '?')}"]
    for key in ("step", "max_steps", "reward"):
        if status.get(key) is not None:
            parts.append(f"{key}={status[key]}")
    return " ".join(parts)


def _pause(api, space_id: str, log: Callable[[str], None]) -> None:
    try:
        api.pause_space(space_id)
        log(f"paused {space_id}")
    except Exception as error:  # noqa: BLE001 - say it; the user must pause it by hand
        log(f"could not pause {space_id}: {type(error).__name__}; pause it on the Hub to stop billing")


def deploy(options: DeployOptions, *, dry_run: bool, follow_run: bool, api=None,
           out=sys.stdout) -> int:
    """Build the plan, print it, and (unless dry_run) run it; then optionally follow."""
    def log(text: str) -> None:
        print(text, file=out, flush=True)

    plan = build_plan(options, gate_secret=None if not dry_run else SecretValue(
        GATE_SECRET, "freshly generated at deploy time (secrets.token_urlsafe(32))", None))
    log(plan.render(dry_run))
    if dry_run:
        if follow_run:
            log("\n--follow: after the upload, would poll HfApi.get_space_runtime and the Space's /api/status, and "
                "call HfApi.pause_space when training ends.")
        return 0
    token = next(call.kwargs["value"] for call in plan.calls if call.kwargs.get("key") == HF_TOKEN_SECRET)
    if token.value is None:
        raise PlanError(f"no Hugging Face token: {token.origin}")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token.value)
    log("")
    run_plan(plan, api, log=log)
    log(f"\ndeployed: https://huggingface.co/spaces/{options.space_id}")
    if follow_run:
        return follow(api, options.space_id, token=token.value, log=log)
    return 0
