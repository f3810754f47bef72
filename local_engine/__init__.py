"""The local engine: a transformers model served over the subset of vLLM's HTTP API that TRL and the worker use.

Reached over HTTP only (it imports nothing of ours but `intercept_common`; import-linter). `server` (the API),
`generation` (one thread batching the waiting requests), `sampling`, `kv_rows` (continuous-batching cache surgery),
`embedded` (the tiny default model), `client` (the trainer's weight push), `background` (in-process, for tests),
`cli` (`intercept-rl engine`).
"""
