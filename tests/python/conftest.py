"""Shared helpers: the conclave binary under test, free ports, waiting for services."""

import os
import pathlib
import socket
import subprocess
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]


class _Conclave:
    """Runs the conclave binary built by cargo (CONCLAVE_BIN overrides the path)."""

    path = os.environ.get("CONCLAVE_BIN", str(ROOT / "target" / "debug" / "conclave"))

    def __call__(self, *args, timeout=120):
        result = subprocess.run([self.path, *args], capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"conclave {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result.stdout


conclave = _Conclave()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.time() > deadline:
                raise
        time.sleep(0.1)
