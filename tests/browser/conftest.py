"""Fixtures for the browser tests: JupyterLab on copies of the notebooks, driven by Chromium.

`make test-browser` runs these (`pytest -m browser tests/browser`); `make test` never does.
Playwright is imported lazily, so collecting this folder without it installed still works.

- `lab_server` (session): a JupyterLab server on 127.0.0.1, a free port and a random token, whose
  root is a temporary folder holding *copies* of notebooks/*.ipynb with their outputs cleared, so
  the committed notebooks are never touched. Config, data, runtime, settings and workspace dirs
  are temporary too. It is stopped (kernels, then its process group) in every case.
- `browser` (session): Debian's /usr/bin/chromium launched by Playwright (no browser download).
- `lab` (function): a fresh page with helpers to open a notebook, Run All and wait, find errors
  and take screenshots (saved under artifacts/browser/).
- Every process this session starts is gone at its end, or the session errors.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
ARTIFACTS = REPO / "artifacts" / "browser"
CHROMIUM = os.environ.get("SIMCLR_TEACH_CHROMIUM", "/usr/bin/chromium")
# Known to work as root, offline, in a container (Playwright adds its own --user-data-dir: fresh).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_S = 120  # JupyterLab starts in ~5-15 s; a busy 2-core CI machine is slower
KERNEL_START_S = 120  # a kernel importing torch on a busy machine
NOTEBOOK_RUN_S = 300  # 01 and 02 run in < 2 min each on CPU
LOG_TAIL_LINES = 80

# JupyterLab user settings for the test: every cell stays in the DOM (no windowing), never save,
# no news / update checks (offline).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


# ---------------------------------------------------------------------------------------------
# reporting: where the screenshots are, and the server log's tail when something failed


_FAILED = pytest.StashKey[bool]()  # on config (any test failed) and on each item
_LOG = pytest.StashKey[Path]()
_RAN = pytest.StashKey[bool]()  # a browser test ran in this session


def pytest_runtest_makereport(item, call):
    if call.excinfo is not None and not call.excinfo.errisinstance(pytest.skip.Exception):
        item.config.stash[_FAILED] = True
        item.stash[_FAILED] = True


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not config.stash.get(_RAN, False):
        return
    terminalreporter.write_sep("-", "browser test artifacts")
    terminalreporter.write_line(f"screenshots and logs: {ARTIFACTS}")
    log = config.stash.get(_LOG, None)
    if log is not None and config.stash.get(_FAILED, False) and log.exists():
        lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        terminalreporter.write_sep("-", f"JupyterLab server log, last {len(lines)} lines ({log})")
        for line in lines:
            terminalreporter.write_line(line)


# ---------------------------------------------------------------------------------------------
# processes


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The processes of `procs` still running (zombies count as gone: they hold no resources)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _stop(procs: list[psutil.Process], timeout: float = 10.0) -> list[psutil.Process]:
    """SIGTERM, wait, then SIGKILL; returns what is still alive after all that."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        procs = _alive(procs)
        for p in procs:
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=wait)
    return _alive(procs)


@pytest.fixture(scope="session", autouse=True)
def no_leftover_processes(request) -> Iterator[None]:
    """Set up first, torn down last: nothing this session started may still be running.

    SIGTERM (a cancelled CI job) is turned into KeyboardInterrupt, so pytest still tears the
    fixtures down: the server and the browser are stopped however the session ends.
    """
    request.config.stash[_RAN] = True
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*"):
        if old.is_file():
            old.unlink()

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
    left = [p for p in _alive(psutil.Process().children(recursive=True)) if p.pid not in before]
    if left:
        desc = [f"{p.pid} {' '.join(p.cmdline())[:120]}" for p in left]
        _stop(left)
        pytest.fail(
            "processes left running after the browser tests (now killed):\n" + "\n".join(desc)
        )


# ---------------------------------------------------------------------------------------------
# JupyterLab server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_copy(src: Path, dst: Path) -> None:
    """Copy a notebook with outputs and counts cleared, so what the test sees is from its run.

    Cells marked `# NBVAL_RAISES_EXCEPTION` get the `raises-exception` tag, which JupyterLab
    honours: Run All goes on past them, as nbval does.
    """
    nb = nbformat.read(src, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = []
        cell.execution_count = None
        if "NBVAL_RAISES_EXCEPTION" in cell.source:
            tags = cell.metadata.setdefault("tags", [])
            if "raises-exception" not in tags:
                tags.append("raises-exception")
    nb.metadata.get("widgets", {}).clear()
    nbformat.write(nb, dst)


@dataclass
class LabServer:
    url: str  # http://127.0.0.1:PORT/
    token: str
    root: Path  # the served folder: copies of the notebooks
    log: Path
    proc: subprocess.Popen
    kernels_seen: set[int] = field(default_factory=set)

    def api(self, path: str, method: str = "GET", timeout: float = 10.0):
        req = urllib.request.Request(
            self.url + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def remember_children(self) -> None:
        """Record the server's descendants (kernels) so they can be stopped even if orphaned."""
        try:
            self.kernels_seen |= {
                p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)
            }
        except psutil.NoSuchProcess:
            pass


def _start_server(tmp: Path, root: Path, log: Path) -> LabServer:
    env = dict(os.environ)
    for var, sub in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_SETTINGS_DIR", "settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
        ("IPYTHONDIR", "ipython"),
    ]:
        (tmp / sub).mkdir(exist_ok=True)
        env[var] = str(tmp / sub)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env["JUPYTER_PREFER_ENV_PATH"] = "1"
    # the kernel is .venv's python3 (jupyter_client maps the spec's "python" to sys.executable)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("MPLBACKEND", None)
    for name, value in LAB_SETTINGS.items():
        path = tmp / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))

    port, token = _free_port(), secrets.token_hex(24)
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.open_browser=False",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return LabServer(f"http://127.0.0.1:{port}/", token, root, log, proc)


def _wait_ready(server: LabServer) -> bool:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return False
        try:
            server.api("api/status", timeout=5)
            return True
        except OSError:
            time.sleep(0.5)
    return False


def _stop_server(server: LabServer) -> None:
    server.remember_children()
    if server.proc.poll() is None:
        try:  # shut the kernels down cleanly first; they live in their own sessions
            for kernel in server.api("api/kernels"):
                server.api(f"api/kernels/{kernel['id']}", method="DELETE", timeout=20)
        except (OSError, ValueError):
            pass
        server.remember_children()
        try:
            os.killpg(server.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(server.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.proc.wait(timeout=10)
    kernels = []
    for pid in server.kernels_seen:
        try:
            kernels.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    left = _stop(kernels)
    assert server.proc.poll() is not None, "the JupyterLab server is still running"
    assert not left, f"kernel processes still running: {[p.pid for p in left]}"


@pytest.fixture(scope="session")
def lab_server(request, tmp_path_factory) -> Iterator[LabServer]:
    tmp = tmp_path_factory.mktemp("jupyterlab")
    root = tmp / "root"
    root.mkdir()
    for nb in sorted(NOTEBOOKS.glob("*.ipynb")):
        _clean_copy(nb, root / nb.name)
    log = ARTIFACTS / "jupyter-server.log"
    request.config.stash[_LOG] = log
    server = None
    try:
        for _attempt in range(3):  # a free port can be taken between probe and bind: retry
            server = _start_server(tmp, root, log)
            if _wait_ready(server):
                break
            _stop_server(server)
        else:
            pytest.fail(f"JupyterLab did not start; log tail:\n{server.log_tail()}")
        yield server
    finally:
        if server is not None:
            _stop_server(server)


# ---------------------------------------------------------------------------------------------
# Chromium


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} not found: `make test-browser` installs it (apt-get install "
            "chromium), or set SIMCLR_TEACH_CHROMIUM to a Chromium binary"
        )
    from playwright.sync_api import sync_playwright  # only the browser tests need it

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield browser
        finally:
            browser.close()


# ---------------------------------------------------------------------------------------------
# one page of JupyterLab

PROMPT_RE = re.compile(r"\[(\d+|\*| )\]")


class Lab:
    """A JupyterLab page with the few actions the tests need."""

    def __init__(self, page, server: LabServer, name: str):
        self.page, self.server, self.name = page, server, name
        self.shots: list[Path] = []
        self.console: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def screenshot(self, step: str, locator=None) -> Path:
        path = ARTIFACTS / f"{self.name}-{len(self.shots):02d}-{step}.png"
        (locator or self.page).screenshot(path=str(path))
        self.shots.append(path)
        print(f"screenshot: {path}")
        return path

    def open(self, notebook: str) -> None:
        """Open `notebook` (a copy in the server's root) in a fresh workspace; wait for its
        kernel to be idle."""
        workspace = re.sub(r"\W", "-", f"{self.name}-{notebook}")
        self.page.goto(
            f"{self.server.url}lab/workspaces/{workspace}/tree/{notebook}"
            f"?reset&token={self.server.token}",
            timeout=60_000,
        )
        self.notebook = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").last
        self.notebook.locator(".jp-Cell").first.wait_for(timeout=60_000)
        self.path = notebook
        self.wait_kernel_idle(timeout_s=KERNEL_START_S)

    def accept_kernel_dialog(self) -> bool:
        """JupyterLab asks "Select Kernel" when the notebook opened before the kernel specs
        loaded; its default is the notebook's python3. Accept it. True if there was one."""
        dialog = self.page.locator(".jp-Dialog", has_text="Select Kernel")
        if dialog.count() and dialog.first.is_visible():
            dialog.first.locator("button.jp-mod-accept").click()
            return True
        return False

    def kernel_state(self) -> str | None:
        """The server's view of this notebook's kernel: "idle", "busy", "starting" or None."""
        for session in self.server.api("api/sessions"):
            if session.get("path") == self.path and session.get("kernel"):
                return session["kernel"].get("execution_state")
        return None

    def wait_kernel_idle(self, timeout_s: float) -> None:
        """Until the server says this notebook's kernel is idle and the page shows it idle."""
        indicator = self.page.locator(
            '.jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator[data-status="idle"]'
        )
        deadline = time.monotonic() + timeout_s
        while True:
            self.accept_kernel_dialog()
            if self.kernel_state() == "idle" and indicator.count():
                self.server.remember_children()
                return
            if time.monotonic() > deadline:
                self.screenshot("kernel-not-idle")
                raise AssertionError(
                    f"the kernel of {self.path} is not idle after {timeout_s} s"
                    f" (server says {self.kernel_state()!r})"
                )
            self.page.wait_for_timeout(250)

    def code_cells(self):
        return self.notebook.locator(".jp-CodeCell")

    def prompts(self) -> list[str]:
        return [
            m.group(1) if (m := PROMPT_RE.search(t)) else t
            for t in self.code_cells().locator(".jp-InputArea-prompt").all_inner_texts()
        ]

    def run_all(self, timeout_s: float = NOTEBOOK_RUN_S) -> None:
        """Run → Run All Cells, then wait until every code cell ran or the run stopped."""
        self.page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        self.server.remember_children()
        deadline = time.monotonic() + timeout_s
        while True:
            prompts = self.prompts()
            done = all(p.isdigit() for p in prompts)
            stopped = "*" not in prompts and self.errors()
            if done or stopped:
                break
            if self.accept_kernel_dialog():
                continue
            dialog = self.page.locator(".jp-Dialog")
            if dialog.count():
                self.screenshot("unexpected-dialog")
                raise AssertionError(f"a dialog blocks the run: {dialog.first.inner_text()!r}")
            if time.monotonic() > deadline:
                self.screenshot("run-all-timeout")
                raise AssertionError(f"Run All did not finish in {timeout_s} s; prompts {prompts}")
            self.page.wait_for_timeout(500)
        self.wait_kernel_idle(timeout_s=KERNEL_START_S)

    def slider(self, container, description: str):
        """The ipywidgets slider labelled `description` inside `container` (a locator)."""
        label = re.compile(rf"^\s*{re.escape(description)}\s*$")
        return container.locator(".widget-slider").filter(
            has=self.page.locator(".widget-label", has_text=label)
        )

    def press_slider(self, slider, *keys: str) -> str:
        """Focus the slider's handle, press `keys` (ArrowRight, End, ...); returns the readout."""
        handle = slider.locator(".noUi-handle")
        handle.focus()
        for key in keys:
            handle.press(key)
        return slider.locator(".widget-readout").inner_text()

    def image_bytes(self, img) -> bytes:
        """The bytes an <img> shows (ipywidgets.Image uses blob: URLs, new on every update)."""
        data = img.evaluate(
            "async (el) => Array.from(new Uint8Array(await (await fetch(el.src)).arrayBuffer()))"
        )
        return bytes(data)

    def wait_for_change(self, read, before, what: str, timeout_s: float = 60.0):
        """Poll `read()` until it differs from `before`; returns the new value."""
        deadline = time.monotonic() + timeout_s
        while (now := read()) == before:
            if time.monotonic() > deadline:
                self.screenshot("unchanged-" + re.sub(r"\W", "-", what))
                raise AssertionError(f"{what} did not change within {timeout_s} s")
            self.page.wait_for_timeout(250)
        return now

    def errors(self) -> list[str]:
        """Texts of error outputs (tracebacks) and widget render errors, except in cells that
        are expected to raise (`# NBVAL_RAISES_EXCEPTION`)."""
        found = []
        for cell in self.code_cells().all():
            source = cell.locator(".jp-InputArea-editor").inner_text()
            if "NBVAL_RAISES_EXCEPTION" in source:
                continue
            for out in cell.locator(".jp-OutputArea-output").all():
                text = out.inner_text()
                mime = out.get_attribute("data-mime-type") or ""
                if (
                    "Traceback" in text
                    or "Error displaying widget" in text
                    or (mime.endswith("stderr") and re.search(r"\w+Error\b", text))
                ):
                    found.append(f"cell {source[:60]!r}: {text[:2000]}")
        return found


@pytest.fixture(scope="session")
def expect():
    """Playwright's `expect` (auto-retrying assertions), imported only when a test needs it."""
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    return expect


@pytest.fixture
def lab(request, browser, lab_server) -> Iterator[Lab]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    name = re.sub(r"\W", "-", request.node.name)
    lab = Lab(page, lab_server, name)
    try:
        yield lab
    finally:
        if request.node.stash.get(_FAILED, False):
            try:
                lab.screenshot("at-failure")
            except Exception as e:  # the page may be gone; the log says why
                print(f"no failure screenshot: {e}")
        (ARTIFACTS / f"{name}-console.log").write_text("".join(f"{m}\n" for m in lab.console))
        context.close()
        lab_server.remember_children()
        try:  # shut this test's kernels down: each one holds torch and the digits in memory
            for session in lab_server.api("api/sessions"):
                lab_server.api(f"api/sessions/{session['id']}", method="DELETE", timeout=30)
        except OSError as e:
            print(f"could not shut the kernels down: {e}")
