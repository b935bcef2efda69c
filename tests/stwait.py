"""Browser-test helpers (docs/design.md, "The house"): a Streamlit server on loopback,
Debian's Chromium through Playwright, the reliable "run finished" wait, and screenshots."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    # Several sessions at once: a window in the background keeps its timers (Streamlit's polling).
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]  # fmt: skip
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
expect.set_options(timeout=30_000)


@contextmanager
def streamlit_server(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """A fresh `streamlit run app.py` on a free loopback port; yields its URL, fails on a traceback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
        "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
    ]  # fmt: skip
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"streamlit exited:\n{log_path.read_text()}"
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                assert time.monotonic() < deadline, f"streamlit not ready:\n{log_path.read_text()}"
                time.sleep(0.2)  # poll interval, not a fixed wait
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert "Traceback" not in log_path.read_text(), log_path.read_text()


def settle(page: Page, marker: Locator) -> None:
    """Wait until the rerun that produces `marker` has fully finished, and fail on any exception box."""
    expect(marker).to_be_visible()
    page.wait_for_selector(IDLE, state="attached")
    expect(page.get_by_test_id("stSkeleton")).to_have_count(0)
    errors = page.get_by_test_id("stException")
    assert errors.count() == 0, errors.all_inner_texts()


def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    return path
