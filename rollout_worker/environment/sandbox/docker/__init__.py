"""The `docker` sandbox backend (optional extra `docker`; docs/containers.md).

- `config`: `DockerSandboxConfig` and the container spec (mounts, limits, labels, the inner command).
- `backend`: `DockerSandboxBackend` / `DockerSandbox`, one `--network none` container per rollout.
- `history`: the derived image whose repository history ends at the base commit.
- `client`: the Docker client and its I/O (long streams on their own threads, archives, safe extraction).
- `executor`: the host grader's test command in a fresh container, for hosts with Docker but no bubblewrap.
"""
