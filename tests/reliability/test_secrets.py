"""No secret in any output: with an HF token planted in the environment, a real `intercept-rl rollouts` run writes
neither it nor any rollout key (irl-<64 hex>) into its trajectories, its progress output or its errors."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from local_engine.embedded import CACHE_ENV, default_cache_root

pytestmark = pytest.mark.slow

ROLLOUT_KEY = re.compile(r"irl-[0-9a-f]{64}")


def test_planted_secrets_appear_in_no_record_or_output(tmp_path):
    planted = "hf_" + "PlantedSecret" * 3
    out = tmp_path / "out.jsonl"
    # A bare environment and an empty HOME, but the embedded model's cache kept: rebuilding it under the new HOME
    # costs minutes and has nothing to do with secrets.
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "HF_TOKEN": planted,
           "HUGGING_FACE_HUB_TOKEN": planted, CACHE_ENV: str(default_cache_root())}
    proc = subprocess.run([sys.executable, "-m", "intercept_rl_cli", "rollouts", "--agent", "single-shot",
                           "--tasks", "learning", "--num-generations", "3", "--max-tokens-per-turn", "8",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    texts = {"trajectories": out.read_text(), "stdout": proc.stdout, "stderr": proc.stderr}
    assert texts["trajectories"].count("\n") == 3
    found = {name: (planted in text) or bool(ROLLOUT_KEY.search(text)) for name, text in texts.items()}
    print(f"\nsecret scan: {sum(len(t) for t in texts.values())} characters scanned, secrets found: "
          f"{sum(found.values())}")
    assert not any(found.values()), found
