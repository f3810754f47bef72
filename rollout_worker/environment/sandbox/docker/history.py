"""Nothing of the future in an image task's repository: the agent's container starts from a derived image whose
repository history ends at the base commit.

SWE-bench-style images are built by cloning the whole repository and resetting it to the base commit, so the fix is
still inside: in the reflog, in refs of other branches and tags, in packed refs, in the remote's refs, in a stash, in
dangling objects a `git fsck --lost-found` or `git cat-file --batch-all-objects` finds (a public report found 21 of
100 runs of a popular agent on SWE-bench Pro reading it). Once per (image, workdir, base commit), a build step
(`FROM` the image, no network) makes HEAD a `main` branch at the base commit without touching the index or the
working tree, deletes every other ref, the remotes, the reflogs, the stash and the merge/rebase state, repacks so
alternates are not needed, expires and prunes everything unreachable, and checks with `git fsck --unreachable` that
nothing is left; the result is tagged `intercept-rl-history/<digest>:<SCRUB_VERSION>` and reused by every later
rollout. The grading container keeps using the task's own image: it runs after the agent is dead and reads only
/testbed's files.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from typing import Any

from rollout_worker.environment.sandbox.errors import SandboxError

SCRUB_VERSION = "2"  # bump when the script changes: derived images are keyed by it
REPOSITORY = "intercept-rl-history"
SOURCE_LABEL = "intercept-rl.history-of"

_SCRIPT = r"""
set -eu
cd "$1" 2>/dev/null || { echo no-repository; exit 0; }  # the sandbox makes its workdir: nothing to clean
base="$2"
[ -e .git ] || { echo no-git; exit 0; }
command -v git >/dev/null || { echo "the image has a repository but no git to clean its history" >&2; exit 5; }
g() { git -c safe.directory='*' -c core.hooksPath=/dev/null -c gc.auto=0 "$@"; }
head=$(g rev-parse --verify HEAD)
[ -n "$base" ] || base=$head
want=$(g rev-parse --verify "$base^{commit}")
[ "$head" = "$want" ] || { echo "HEAD is $head, not the base commit $want" >&2; exit 3; }
for remote in $(g remote); do g remote remove "$remote"; done
g update-ref refs/heads/main "$want"
g symbolic-ref HEAD refs/heads/main
g for-each-ref --format='%(refname)' | while read -r ref; do
  [ "$ref" = refs/heads/main ] || g update-ref -d "$ref"
done
rm -rf .git/logs .git/rebase-merge .git/rebase-apply .git/sequencer
rm -f .git/ORIG_HEAD .git/FETCH_HEAD .git/MERGE_HEAD .git/MERGE_MSG .git/CHERRY_PICK_HEAD .git/REVERT_HEAD \
      .git/AUTO_MERGE .git/BISECT_LOG .git/BISECT_START .git/BISECT_EXPECTED_REV
g worktree prune
g repack -a -d -q
rm -f .git/objects/info/alternates
g reflog expire --expire=now --expire-unreachable=now --all
g -c gc.reflogExpire=now -c gc.reflogExpireUnreachable=now -c gc.pruneExpire=now -c gc.cruftPacks=false \
  gc --prune=now --quiet
left=$(g fsck --unreachable --no-reflogs --no-progress 2>/dev/null | wc -l)
[ "$left" = 0 ] || { echo "$left unreachable objects are left" >&2; exit 4; }
echo scrubbed
"""

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def derived_tag(image_id: str, workdir: str, base_commit: str) -> str:
    digest = hashlib.sha256(json.dumps([image_id, workdir, base_commit, SCRUB_VERSION]).encode()).hexdigest()[:16]
    return f"{REPOSITORY}/{digest}:{SCRUB_VERSION}"


def history_free_image(client: Any, image: str, workdir: str, base_commit: str, timeout_s: float) -> str:
    """The image an agent's container of `image` starts from (blocking; run it in a thread). Raises SandboxError."""
    from docker.errors import ImageNotFound

    try:
        source = client.images.get(image)
    except ImageNotFound as exc:
        raise SandboxError(f"image {image!r} is not present (no registry is used: build or load it first)") from exc
    tag = derived_tag(source.id, workdir, base_commit)
    with _locks_guard:
        lock = _locks.setdefault(tag, threading.Lock())
    with lock:  # two rollouts of one task at once build it once
        try:
            client.images.get(tag)
            return tag
        except ImageNotFound:
            pass
        return _build(client, source, image, tag, workdir, base_commit, timeout_s)


def _build(client: Any, source: Any, image: str, tag: str, workdir: str, base_commit: str, timeout_s: float) -> str:
    """`FROM image` + the script as root, its USER, ENTRYPOINT, CMD and ENV kept (a build, not a commit, so nothing of
    the throwaway container's config leaks into the image). No network; intermediate containers always removed."""
    from docker.errors import BuildError

    user = (source.attrs.get("Config") or {}).get("User") or "root"
    dockerfile = (f"FROM {image}\nUSER root\nARG SCRUB\n"
                  f"RUN sh -c \"$SCRUB\" scrub {json.dumps(workdir)} {json.dumps(base_commit)}\nUSER {user}\n")
    try:
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, buildargs={"SCRUB": _SCRIPT},
                            network_mode="none", rm=True, forcerm=True, labels={SOURCE_LABEL: image},
                            timeout=timeout_s)
    except BuildError as exc:
        lines = [str(chunk.get("stream") or chunk.get("error") or "").strip() for chunk in exc.build_log]
        raise SandboxError(f"cleaning the git history of {image!r} failed: {' | '.join(x for x in lines if x)[-600:]}"
                           ) from exc
    except Exception as exc:
        raise SandboxError(f"cleaning the git history of {image!r} failed: {type(exc).__name__}: {exc}") from exc
    return tag
