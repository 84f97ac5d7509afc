"""JupyterLab as the learner meets it: `make lab`'s launcher on loopback with a token, the
course notebooks and the project's kernel offered, and Lab 1.2 rendered in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts" / "screenshots"


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(300)
@pytest.mark.kernel
def test_jupyterlab_serves_the_course_and_renders_lab_1_2(tmp_path, free_port, chromium):
    port = free_port()
    env = {
        **os.environ,
        "JUPYTER_PORT": str(port),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    proc = subprocess.Popen(
        [str(REPO / "scripts" / "lab.sh")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        banner = "".join(proc.stdout.readline() for _ in range(3))
        token = re.search(r"token: (\w+)", banner)[1]
        assert f"http://127.0.0.1:{port}/lab/tree/labs?token={token}" in banner
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                get(f"{base}/api/status?token={token}")
                break
            except OSError:
                assert time.monotonic() < deadline, "JupyterLab did not answer within 90 s"
                assert proc.poll() is None, "jupyter lab exited during start-up"
                time.sleep(0.5)
        with pytest.raises(urllib.error.HTTPError):
            get(f"{base}/api/contents/labs")  # no token, no access
        listed = {c["name"] for c in get(f"{base}/api/contents/labs?token={token}")["content"]}
        assert {p.name for p in (REPO / "labs").glob("*.ipynb")} <= listed
        specs = get(f"{base}/api/kernelspecs?token={token}")
        assert "mlops-workbook" in specs["kernelspecs"]
        assert specs["default"] == "mlops-workbook"

        browser = chromium()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "lab1_2_in_jupyterlab.png"
        shot.unlink(missing_ok=True)
        url = f"{base}/lab/tree/labs/02_lab1_2b_training_on_mnist.ipynb?token={token}"
        subprocess.run(
            [*browser, f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,900",
             "--virtual-time-budget=20000", f"--screenshot={shot}", url],
            capture_output=True, timeout=120, check=True,
        )  # fmt: skip
        png = shot.read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", png[16:24]) == (1400, 900)
        assert len(png) > 30_000, "a blank page compresses to a few KB; JupyterLab's UI does not"
        print(f"screenshot: {shot}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
