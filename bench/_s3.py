"""A local S3-compatible server for benchmarks and tests: moto's standalone server
(``pip install 'moto[server]'``) on 127.0.0.1, with throwaway credentials, and s3fs configured
for it through fsspec's configuration (so that ``s3://`` URLs reach it with no options)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto_server() -> str | None:
    """The moto_server executable beside this Python, or on the PATH (None: not installed)."""
    return shutil.which("moto_server", path=str(Path(sys.executable).parent)) \
        or shutil.which("moto_server")


def start(log: IO[bytes], timeout: float = 30.0) -> tuple[subprocess.Popen, str]:
    """Start a moto server writing to ``log``; returns it and its endpoint URL once it
    accepts connections. RuntimeError if it is not installed or does not start."""
    exe = moto_server()
    if exe is None:
        raise RuntimeError("moto's standalone server is not installed (pip install "
                           "'moto[server]')")
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"moto_server did not start (exit {proc.poll()})") from None
            time.sleep(0.2)
    return proc, f"http://127.0.0.1:{port}"


def configure(endpoint: str) -> dict:
    """Point fsspec's s3 filesystem (s3fs) at ``endpoint``; returns the previous settings for
    :func:`restore`."""
    import fsspec
    saved = {"conf": fsspec.config.conf.get("s3"),
             "env": {k: os.environ.get(k) for k in CREDENTIALS}}
    os.environ.update(CREDENTIALS)
    fsspec.config.conf["s3"] = {"endpoint_url": endpoint, "key": "testing", "secret": "testing",
                                "skip_instance_cache": True}
    return saved


def restore(saved: dict) -> None:
    import fsspec
    if saved["conf"] is None:
        fsspec.config.conf.pop("s3", None)
    else:
        fsspec.config.conf["s3"] = saved["conf"]
    for k, v in saved["env"].items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def make_bucket(name: str) -> None:
    import fsspec
    fsspec.filesystem("s3").mkdir(name)
