"""CI check of the README's main command: `make lab` starts JupyterLab and the course is there.

Run by .ci/run on a clean clone (so the set-up `make lab` does is part of the check). It starts
`make lab` on 127.0.0.1 with a random port and token and no browser, waits until the server
answers, lists `00_setup.ipynb` through the contents API, opens it as a session (a kernel, as
JupyterLab does when a student opens the notebook) and runs its first code cells in that kernel
through the kernel's websocket, then stops the session and the whole process group, in every
case. Exit status 0 = the lab works; otherwise a one-line reason and the tail of the server's log.

    python3 scripts/check_lab.py [--timeout 900]

The driver needs only the standard library: it runs before `make lab` has created .venv. The
cells are sent by a second process in .venv (``--run-cells``), which has websocket-client (a
dependency of jupyter_server).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRST_NOTEBOOK = "00_setup.ipynb"
FIRST_CELLS = 3  # imports, parameters, seed + versions: what a student runs first
VENV_PYTHON = REPO / ".venv" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, token: str, path: str, method: str = "GET", body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{base}{path}",
        method=method,
        data=data,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else {}


def wait_for(what: str, probe, deadline: float, server: subprocess.Popen):
    """Call ``probe`` until it returns something truthy; fail if the server exits or time is up."""
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"`make lab` exited with status {server.returncode} before {what}")
        try:
            result = probe()
            if result:
                return result
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(1)
    raise RuntimeError(f"timed out waiting for {what}")


def stop(server: subprocess.Popen) -> None:
    """SIGTERM the process group (make, jupyter, kernels), then SIGKILL what is left."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait()


def run_cells(base: str, token: str, kernel_id: str) -> int:
    """Run the first code cells of the first notebook in a kernel of the server (in .venv)."""
    import uuid

    import websocket  # websocket-client, installed with jupyter_server

    notebook = json.loads((REPO / "notebooks" / FIRST_NOTEBOOK).read_text())
    cells = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    url = base.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels?token={token}"
    ws = websocket.create_connection(url, timeout=300)
    try:
        for number, source in enumerate(cells[:FIRST_CELLS], 1):
            msg_id = uuid.uuid4().hex
            ws.send(
                json.dumps(
                    {
                        "header": {
                            "msg_id": msg_id,
                            "msg_type": "execute_request",
                            "username": "ci",
                            "session": uuid.uuid4().hex,
                            "version": "5.3",
                        },
                        "parent_header": {},
                        "metadata": {},
                        "channel": "shell",
                        "buffers": [],
                        "content": {
                            "code": source,
                            "silent": False,
                            "store_history": True,
                            "user_expressions": {},
                            "allow_stdin": False,
                            "stop_on_error": True,
                        },
                    }
                )
            )
            while True:
                message = json.loads(ws.recv())
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = message["msg_type"], message["content"]
                if kind == "stream":
                    print(content["text"], end="")
                elif kind == "error":
                    print("\n".join(content["traceback"]))
                elif kind == "execute_reply":
                    if content["status"] != "ok":
                        print(f"code cell {number} ended with status {content['status']}")
                        return 1
                    break
    finally:
        ws.close()
    return 0


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--run-cells":
        return run_cells(*sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--timeout",
        type=float,
        default=900,
        help="seconds for the set-up, the server start and the first cells (default 900)",
    )
    args = parser.parse_args()

    port, token = free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    lab_args = (
        f"--no-browser --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 "
        f"--IdentityProvider.token={token}"
    )
    log = Path(tempfile.mkdtemp(prefix="check-lab-")) / "make-lab.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            ["make", "lab", f"LAB_ARGS={lab_args}"],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + args.timeout
    session_id = None
    try:
        wait_for("the server answered", lambda: api(base, token, "/api/status"), deadline, server)
        listing = api(base, token, "/api/contents/")
        names = [item["name"] for item in listing["content"]]
        if FIRST_NOTEBOOK not in names:
            raise RuntimeError(
                f"{FIRST_NOTEBOOK} is not in the lab's root folder; it lists {names}"
            )
        session = api(
            base,
            token,
            "/api/sessions",
            method="POST",
            body={
                "path": FIRST_NOTEBOOK,
                "type": "notebook",
                "name": FIRST_NOTEBOOK,
                "kernel": {"name": "python3"},
            },
        )
        session_id = session["id"]
        left = max(1, int(deadline - time.monotonic()))
        run = subprocess.run(
            [str(VENV_PYTHON), __file__, "--run-cells", base, token, session["kernel"]["id"]],
            cwd=REPO,
            timeout=left,
            capture_output=True,
            text=True,
        )
        print(run.stdout, end="")
        if run.returncode != 0:
            raise RuntimeError(
                f"the first cells of {FIRST_NOTEBOOK} failed in the lab's kernel:\n"
                f"{run.stdout}{run.stderr}"
            )
        print(
            f"check_lab: `make lab` serves {FIRST_NOTEBOOK}; its first {FIRST_CELLS} code cells "
            f"ran in the lab's kernel"
        )
        return 0
    except (RuntimeError, urllib.error.URLError, KeyError, subprocess.TimeoutExpired) as error:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        print(f"check_lab: FAILED: {error}\n--- last lines of `make lab` ---", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)
        return 1
    finally:
        if session_id is not None and server.poll() is None:
            try:
                api(base, token, f"/api/sessions/{session_id}", method="DELETE")
            except (urllib.error.URLError, OSError):
                pass
        stop(server)


if __name__ == "__main__":
    sys.exit(main())
