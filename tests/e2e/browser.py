"""A real browser for end-to-end tests: Debian's chromium driven by playwright-core, from Python.

Usage (any test; the page must be served on `origin`)::

    from e2e.browser import Browser, require_browser

    require_browser()                      # skip locally without chromium/node/npm; fail on CI
    require_viewer()                       # the same, and install the bundled viewer if missing
    with Browser("http://127.0.0.1:8080") as b:
        b.goto("/ui/studies")              # relative to the origin, or absolute
        b.wait_for_selector("tbody tr")
        b.click(text="Open in viewer")     # or selector="a.open"
        found = b.wait_for_text(r"I:\\d+ \\(1/20\\)")   # a regular expression on the page's text
        b.wheel("canvas", steps=3)         # mouse wheel over the centre of the first match
        b.screenshot(tmp_path / "viewer.png")
        title = b.evaluate("document.title")
        assert b.off_origin() == []        # every request stayed on `origin` (others were aborted)
        assert b.http_errors() == []       # no response >= 400 (e.g. a 404 of a missing chunk)

`tests/e2e/driver.mjs` launches `/usr/bin/chromium` headless with the flags of
`ohif-feasibility.md` (`--no-sandbox --disable-gpu --enable-unsafe-swiftshader ...`) and answers
one JSON command per line. Requests leaving the origin are aborted, as on a hospital network
without internet, and listed by `off_origin()`; `log()` returns everything recorded (requests,
off-origin, HTTP errors, failed requests, console and page errors). A failed command raises
`BrowserError` with playwright's message. playwright-core comes from `tests/e2e/package.json`
(`npm ci --prefix tests/e2e`, which `./run tests` and `require_browser` do when it is missing).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
DEFAULT_TIMEOUT = 30.0


class BrowserError(AssertionError):
    """A browser command failed (a wait timed out, a selector matched nothing...)."""


def _missing(message: str) -> None:
    if os.environ.get("PERGAMON_TEST_REQUIRE_PEERS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def require_browser() -> None:
    """Skip (fail on CI) without chromium or node; install playwright-core when npm can."""
    if not Path(CHROMIUM).is_file():
        _missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    if shutil.which("node") is None:
        _missing("node is not installed (apt-get install nodejs npm)")
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            _missing("playwright-core is not installed and npm is missing (apt-get install npm)")
        else:
            done = subprocess.run(
                [npm, "ci", "--prefix", str(HERE), "--ignore-scripts", "--no-audit", "--no-fund"],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if done.returncode != 0:
                _missing(f"npm ci --prefix tests/e2e failed: {done.stderr.strip()[-500:]}")


def require_viewer() -> Path:
    """The installed bundled viewer (`viewer.path`), installed now when missing; skip (fail on CI) if it cannot be."""
    from pergamon.config import Settings
    from pergamon.viewer.install import InstallError, install

    require_browser()
    target = Settings().viewer_path
    try:
        install(target)
    except InstallError as exc:
        _missing(f"the viewer cannot be installed: {exc}")
    return target


class Browser:
    """One headless chromium page whose requests are confined to `origin` (see the module docstring)."""

    def __init__(self, origin: str, *, width: int = 1400, height: int = 900, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.origin = origin.rstrip("/")
        self.timeout = timeout
        options = {"origin": self.origin, "executablePath": CHROMIUM, "width": width, "height": height}
        self._ids = itertools.count(1)
        # A stderr pipe nobody reads could fill up and block node: it goes to a file instead.
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in close()
        self._proc = subprocess.Popen(
            [shutil.which("node") or "node", str(HERE / "driver.mjs"), json.dumps(options)],
            cwd=HERE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _call(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        command = {"id": next(self._ids), "op": op, "timeout": (timeout or self.timeout) * 1000, **args}
        try:
            self._proc.stdin.write(json.dumps(command) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self._proc.stdout.readline()
        if not line:
            self._stderr.seek(0)
            stderr = self._stderr.read()
            raise BrowserError(f"the browser driver stopped: {stderr.strip()[-2000:]}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise BrowserError(f"{op} {args}: {answer['error']}")
        return answer["value"]

    def goto(self, url: str, *, timeout: float | None = None) -> int | None:
        """Load `url` (absolute, or relative to the origin); returns the HTTP status."""
        status: int | None = self._call("goto", timeout, url=url)
        return status

    def wait_for_selector(self, selector: str, *, timeout: float | None = None) -> None:
        """Wait until an element matching the CSS/playwright `selector` is visible."""
        self._call("waitForSelector", timeout, selector=selector)

    def wait_for_text(self, pattern: str, *, timeout: float | None = None) -> str:
        """Wait until the page's visible text matches the regular expression; returns the match."""
        found: str = self._call("waitForText", timeout, pattern=pattern)
        return found

    def click(self, selector: str | None = None, *, text: str | None = None, timeout: float | None = None) -> str:
        """Click the first element matching `selector`, or showing exactly `text`; returns the page URL after."""
        args = {"text": text} if text is not None else {"selector": selector}
        url: str = self._call("click", timeout, **args)
        return url

    def wheel(self, selector: str, *, delta_y: int = 100, steps: int = 1, timeout: float | None = None) -> None:
        """Turn the mouse wheel `steps` times over the centre of the first `selector` match."""
        self._call("wheel", timeout, selector=selector, deltaY=delta_y, steps=steps)

    def text(self, selector: str, *, timeout: float | None = None) -> str:
        """The visible text of the first `selector` match."""
        value: str = self._call("text", timeout, selector=selector)
        return value

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable)."""
        return self._call("evaluate", expression=expression)

    def screenshot(self, path: Path | str, *, full_page: bool = False) -> Path:
        """Save a PNG of the page."""
        self._call("screenshot", path=str(path), fullPage=full_page)
        return Path(path)

    def url(self) -> str:
        value: str = self._call("url")
        return value

    def log(self) -> dict[str, list[Any]]:
        """Everything recorded: requests, offOrigin, httpErrors, failed, consoleErrors, pageErrors."""
        value: dict[str, list[Any]] = self._call("log")
        return value

    def off_origin(self) -> list[str]:
        """URLs the page asked for outside the origin (aborted)."""
        return list(self.log()["offOrigin"])

    def http_errors(self) -> list[dict[str, Any]]:
        """Responses with a status >= 400, as {status, url}."""
        return list(self.log()["httpErrors"])

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(BrowserError, OSError, ValueError):
                self._call("close", 10)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()
        self._stderr.close()
