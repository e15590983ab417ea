"""Processes the benchmarks start: worker processes and a web server, on the
measuring process's throwaway database, with output to a log file.

Each runs in a process group of its own and is stopped with SIGTERM (then
SIGKILL), pool children included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


def bench_env(**extra: str) -> dict[str, str]:
    """This process's environment (the runner's throwaway database, var dir and
    log level) with the benchmark settings and ``extra``."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(PROJECT_DIR), os.environ.get("PYTHONPATH")) if p
        ),
    }
    env.pop("NOTIFY_BROKER_URL", None)
    env.update(extra)
    return env


class BenchProcess:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], ready: str) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.ready = ready
        log_dir = Path(env.get("NOTIFY_VAR_DIR") or "/tmp")  # noqa: S108 - fallback only
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> BenchProcess:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our arguments
                self.argv,
                cwd=PROJECT_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready in self.text():
                return
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start:\n{self.text()[-3000:]}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        except ProcessLookupError:
            pass


def notify_worker(threads: int, env: dict[str, str]) -> BenchProcess:
    """``manage.py notify worker``: one process, the in-process pool."""
    argv = [sys.executable, "manage.py", "notify", "worker", "--threads", str(threads)]
    return BenchProcess("notify-worker", argv, env, ready="worker pool running")


def celery_worker(processes: int, queue: str, env: dict[str, str]) -> BenchProcess:
    """``celery -A notify worker``: ``processes`` prefork pool processes."""
    argv = [
        str(Path(sys.executable).with_name("celery")),
        "-A",
        "notify",
        "worker",
        "-Q",
        queue,
        "-n",
        f"bench-{uuid.uuid4().hex[:6]}@%h",
        "-c",
        str(processes),
        "-P",
        "prefork",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    return BenchProcess("celery-worker", argv, env, ready=" ready.")


def notify_run(port: int, env: dict[str, str], *options: str) -> BenchProcess:
    """``manage.py notify run``: uvicorn, the worker pool and the scheduler
    (``options``, e.g. ``--no-worker``, as the command takes them)."""
    argv = [sys.executable, "manage.py", "notify", "run", "--port", str(port), *options]
    return BenchProcess("notify-run", argv, env, ready=f"127.0.0.1:{port}")
