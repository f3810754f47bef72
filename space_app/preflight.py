"""`python -m space_app.preflight`: may this container run model-written code? (start.sh runs it before anything.)

The agents run code the policy wrote. intercept-rl isolates it in bubblewrap sandboxes (user, pid, net, ipc, uts,
mount namespaces; no network; read-only system), which need unprivileged user namespaces. A Space container is an
unprivileged container (uid 1000, no `--privileged`, no added capabilities, no Docker daemon), and whether its runtime
lets a process create user namespaces is the host's choice; it cannot be checked from here (docs/space.md). So this
probes it at start with the same check `intercept-rl doctor` runs (`doctor.checks.check_bubblewrap`):

* bubblewrap starts: exit 0, training uses `--sandbox local`.
* it does not: exit 1 with the reason; start.sh refuses to train. The model-written code would otherwise run with
  the Space's secrets (HF_TOKEN) and network in reach.
* it does not, and `INTERCEPT_RL_ALLOW_UNSANDBOXED=1` (`intercept-rl space deploy --allow-unsandboxed`): a loud
  warning, exit 0. (The rollout worker has no unsandboxed backend yet: the rollouts then fail as unscorable, which is
  the safe failure; docs/space.md lists what is needed.)
"""

from __future__ import annotations

import os
import sys

from doctor.checks import Status, check_bubblewrap

ALLOW_ENV = "INTERCEPT_RL_ALLOW_UNSANDBOXED"
BANNER = "!" * 100


def preflight(environ: dict[str, str] | None = None, check=check_bubblewrap, out=sys.stdout) -> int:
    environ = os.environ if environ is None else environ
    results = check()
    for result in results:
        print(f"[preflight] {result.line()}", file=out, flush=True)
    if results and results[0].status is Status.OK:  # as this user: the one sandboxes run as in the Space
        print("[preflight] bubblewrap works here: model-written code runs sandboxed (--sandbox local)", file=out)
        return 0
    if environ.get(ALLOW_ENV) == "1":
        print("\n".join([BANNER,
                         "!! bubblewrap CANNOT start in this container, and INTERCEPT_RL_ALLOW_UNSANDBOXED=1 is set.",
                         "!! Model-written code would run WITHOUT a sandbox, next to this Space's secrets (HF_TOKEN)",
                         "!! and its network. You asked for this (--allow-unsandboxed).",
                         BANNER]), file=out, flush=True)
        return 0
    print("[preflight] REFUSING to start: bubblewrap cannot start in this container, so model-written code would "
          "run unsandboxed. Use hardware/runtime that allows user namespaces, a remote sandbox backend, or redeploy "
          "with --allow-unsandboxed (dangerous).", file=out, flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    return preflight()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
