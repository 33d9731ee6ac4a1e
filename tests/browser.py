"""Headless Chromium for the tests that look at a rendered page (the HTML reports, the
Inspect log viewer): where it is, the flags every launch takes, a skip marker for machines
without it, one-shot loads (:func:`dump_dom`, :func:`screenshot`: the page's scripts get a
budget of virtual time) and, for a page that loads its data from a server in workers
(which virtual time does not wait for), a page driven over the DevTools protocol
(:func:`devtools_page`)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not on PATH; install it (as root on Debian or Ubuntu) with "
    "`apt-get update && apt-get install -y chromium`, as .ci/run does in CI",
)


def chromium_flags(profile: Path | str) -> list[str]:
    """Headless Chromium with the profile folder ``profile``. --no-sandbox: Chromium's
    sandbox refuses root; the --disable-* flags keep it off the network; a fresh profile per
    launch, so one launch's state never reaches the next."""
    assert CHROMIUM is not None
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--window-size=1280,2400",
    ]


def fresh_profile(tmp_path: Path) -> str:
    return tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)


def chromium_command(tmp_path: Path, budget_ms: int = 5000) -> list[str]:
    """Headless Chromium with ``budget_ms`` of virtual time for the page's scripts (network
    waits do not use it up)."""
    return [*chromium_flags(fresh_profile(tmp_path)), f"--virtual-time-budget={budget_ms}"]


def dump_dom(url: str, tmp_path: Path, budget_ms: int = 5000) -> str:
    """The page's DOM once its scripts have run for ``budget_ms`` of virtual time."""
    done = subprocess.run(
        [*chromium_command(tmp_path, budget_ms), "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot(url: str, shot: Path, tmp_path: Path, budget_ms: int = 5000) -> Path:
    """A screenshot of the page (the window's size) written to ``shot``."""
    done = subprocess.run(
        [*chromium_command(tmp_path, budget_ms), f"--screenshot={shot}", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    return shot


class DevToolsPage:
    """A page of a running headless Chromium, driven over the DevTools protocol."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.calls = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """The result of one DevTools command (the events in between are skipped)."""
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.calls:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)[
            "result"
        ].get("value")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for_text(self, found: Callable[[str], bool], timeout_s: float = 30.0) -> str:
        """The page's visible text once ``found(text)``; AssertionError with the last text
        seen after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        text = ""
        while time.monotonic() < deadline:
            text = self.evaluate("document.body ? document.body.innerText : ''") or ""
            if found(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"not on the page after {timeout_s} s; it shows: {text[:2000]!r}")

    def html(self) -> str:
        return self.evaluate("document.documentElement.outerHTML")

    def screenshot(self, shot: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        shot.write_bytes(base64.b64decode(data))
        return shot


@contextmanager
def devtools_page(tmp_path: Path, timeout_s: float = 30.0) -> Iterator[DevToolsPage]:
    """A blank page in a headless Chromium of its own (stopped on exit), driven over the
    DevTools protocol on a port Chromium picks (it writes it to its profile)."""
    profile = Path(fresh_profile(tmp_path))
    command = [*chromium_flags(profile), "--remote-debugging-port=0", "about:blank"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while not (active.exists() and active.read_text().strip()):
            assert process.poll() is None, f"chromium exited with {process.returncode}"
            assert time.monotonic() < deadline, "chromium opened no DevTools port"
            time.sleep(0.05)
        port = active.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            targets = json.load(answer)
        page = next(t for t in targets if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as socket:
            yield DevToolsPage(socket)
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it is still there 10 s later (a browser, a viewer)."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
