"""The container recipe: its install step is docker/install.sh (run by .ci/run) and every file the
entrypoint calibration/run_gpu.sh uses is copied into the image."""

from __future__ import annotations

import re
import subprocess

from .conftest import REPO


def _copied_dirs() -> set[str]:
    text = (REPO / "Dockerfile").read_text()
    return {m.group(1).rstrip("/") for m in re.finditer(r"^COPY\s+(\S+)\s+\S+", text, re.M)}


def test_dockerfile_installs_through_the_script_and_runs_the_gpu_entrypoint():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", text, re.M) and "pytorch/pytorch:" in text and "cuda" in text
    assert re.search(r"^ARG INSTALL_VLLM=0", text, re.M)
    assert re.search(r"^RUN INSTALL_VLLM=\$\{INSTALL_VLLM\} bash docker/install\.sh$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["bash", "calibration/run_gpu.sh"\]', text, re.M)
    assert "docker/install.sh --editable" in (REPO / ".ci" / "run").read_text()


def test_every_path_the_entrypoint_uses_is_in_the_image():
    script = (REPO / "calibration" / "run_gpu.sh").read_text()
    used = set(re.findall(r"\b((?:bench|calibration|tests|config)/[\w./-]+\.(?:py|json|sh))", script))
    assert used, "run_gpu.sh names no repository files?"
    copied = _copied_dirs()
    for path in used:
        assert (REPO / path).exists(), path
        assert path.split("/")[0] in copied, f"{path} is not copied into the image"


def test_install_script_refuses_unknown_options():
    r = subprocess.run(["bash", str(REPO / "docker" / "install.sh"), "--bogus"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--bogus" in r.stderr
