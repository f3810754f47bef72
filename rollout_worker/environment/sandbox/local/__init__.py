"""The `local` sandbox backend: bubblewrap, no Docker engine (the default; design §7).

- `bwrap`: the `bwrap` argv, its config, a sandboxed process with a bounded tail, and the test executor graders use.
- `backend`: `LocalSandboxBackend` / `LocalSandbox`, one private repository copy and home per rollout.
"""
