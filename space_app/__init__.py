"""intercept-rl as a Hugging Face Space (Docker SDK, GPU hardware).

* `deploy.py`: `intercept-rl space deploy` — the plan of `huggingface_hub.HfApi` calls that creates (private by
  default), configures and uploads a Space; `--dry-run` prints it, secrets by name only.
* `Dockerfile`, `start.sh`, `README.md` (the Space card): what runs inside the Space.
* `status.py`: the small status page the Space serves on its port (run state, step, reward, Trackio link).
* `preflight.py`: can this container sandbox model-written code (bubblewrap)? Refuses to start otherwise unless the
  user opts in loudly.
* `lock_filter.py`: the project lock without torch's own CUDA runtime (the base image provides torch).

A remote sandbox backend for containers where bubblewrap cannot start exists only as a test-only skeleton
(tests/support/remote_sandbox.py, untested against any provider; docs/space.md).

See docs/space.md.
"""
