"""The job worker, a process apart from the HTTP server (training never stalls a request), and its `Supervisor`.

`python -m gptkit.server.worker --data-dir D` runs the jobs of data directory D one at a time: it claims the
next job (a running one whose worker is gone first, then the oldest queued one), runs it (runner.py) and
polls for the next. While it runs a job it holds the job's lock, DATA_DIR/locks/<job id>, an flock the
kernel drops when the process ends however it ends (kill -9 included), and it takes that lock inside the
claim's transaction: so a `running` job whose lock is free was left by a dead worker and is taken over from
its last checkpoint, and no job runs twice at once. SIGTERM (or the end of the parent given with
--exit-with-parent) stops the worker at the next step with a checkpoint and puts its job back in the queue.

`Supervisor` is what the server owns: it starts `max_jobs` worker processes, restarts one that dies (after a
growing pause when it keeps dying) and stops them. It exposes nothing over HTTP.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from gptkit.server.files import Files
from gptkit.server.store import JobRow, Store

__all__ = ["JobLocks", "Supervisor", "Worker", "main"]

log = logging.getLogger("gptkit.server.worker")
LOCKS_DIR = "locks"


class JobLocks:
    """One flock per job under DATA_DIR/locks, held by the worker running the job (POSIX systems)."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / LOCKS_DIR
        self.root.mkdir(parents=True, exist_ok=True)
        self.held: dict[str, int] = {}

    def try_lock(self, job_id: str) -> bool:
        """Take the job's lock without waiting; True (and it is held) when nobody else holds it."""
        import fcntl

        fd = os.open(self.root / job_id, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.held[job_id] = fd
        return True

    def release(self, job_id: str) -> None:
        fd = self.held.pop(job_id, None)
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the flock


class Worker:
    """Runs a data directory's jobs, one at a time, until `stop()`; see the module docstring."""

    def __init__(
        self, data_dir: str | Path, *, device: str = "auto", poll: float = 1.0, parent_pid: int | None = None
    ) -> None:
        self.store = Store(data_dir)
        self.locks = JobLocks(self.store.data_dir)
        self.device, self.poll, self.parent_pid = device, poll, parent_pid
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()

    def stop(self) -> None:
        """Stop at the next step of the job in hand (it goes back to the queue), or before the next claim."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            self._stop.set()  # the server that started us is gone: let its next start take over
        return self._stop.is_set()

    def run_next(self) -> JobRow | None:
        """Claim and run the next job; the job's row as it ended, or None when there was nothing to run."""
        claimed = self.store.claim(self.name, self.locks.try_lock)
        if claimed is None:
            return None
        job, taken_over = claimed
        from gptkit.server.runner import JobRun  # torch and the training floors: only once there is work

        log.info("running %s (attempt %d)%s", job.id, job.attempts, " after a dead worker" if taken_over else "")
        try:
            return JobRun(self.store, job, taken_over=taken_over, device=self.device, stop=lambda: self.stopping).run()
        finally:
            self.locks.release(job.id)  # after the row's last write

    def serve(self) -> None:
        """Run jobs until stopped, polling the store every `poll` seconds while there is none."""
        Files(self.store).remove_strays()
        log.info("worker %s serving %s", self.name, self.store.data_dir)
        while not self.stopping:
            if self.run_next() is None:
                self._stop.wait(self.poll)
        self.store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gptkit.server.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="the server's data directory (gptkit.db, files/, jobs/)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between looks for work when idle")
    parser.add_argument("--threads", type=int, help="CPU threads for training (default: torch's, one per core)")
    parser.add_argument(
        "--exit-with-parent", type=int, metavar="PID", help="stop when process PID is no longer our parent"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # leave the server's own threads their cores
    worker = Worker(args.data_dir, device=args.device, poll=args.poll, parent_pid=args.exit_with_parent)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    worker.serve()
    return 0


class Supervisor:
    """Keeps `max_jobs` worker processes running for a data directory: start(), then stop() (or a with block).

    threads: each worker's CPU threads for training (default: torch's, one per core; fewer leave the server cores
    to answer with). command: the program to run instead of `python -m gptkit.server.worker` (its arguments are
    appended); worker output goes to DATA_DIR/worker.log. A worker that dies is started again after
    `restart_delay` seconds, doubled while workers die within a minute of starting (up to a minute).
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        max_jobs: int = 1,
        device: str = "auto",
        poll: float = 1.0,
        threads: int | None = None,
        command: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        restart_delay: float = 1.0,
    ) -> None:
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be >= 1, got {max_jobs}")
        self.data_dir = Path(data_dir)
        self.max_jobs, self.restart_delay, self.env = max_jobs, restart_delay, env
        program = list(command) if command is not None else [sys.executable, "-m", "gptkit.server.worker"]
        self.argv = [*program, "--data-dir", str(self.data_dir), "--device", device, "--poll", str(poll)]
        self.argv += ["--exit-with-parent", str(os.getpid())] + (["--threads", str(threads)] if threads else [])
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * max_jobs
        self.restarts = 0  # workers started again after dying
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._log: IO[Any] | None = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p is not None and p.poll() is None]

    def start(self) -> Supervisor:
        Store(self.data_dir).close()  # create or migrate the database before any worker opens it
        self._log = open(self.data_dir / "worker.log", "ab")  # closed by stop()
        for slot in range(self.max_jobs):
            thread = threading.Thread(target=self._keep, args=(slot,), name=f"gptkit-worker-{slot}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _spawn(self, slot: int) -> subprocess.Popen[bytes] | None:
        with self._lock:  # stop() either sees the process or this sees the stop
            if self._stopping.is_set():
                return None
            process = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
            self.processes[slot] = process
            return process

    def _keep(self, slot: int) -> None:
        delay = self.restart_delay
        while (process := self._spawn(slot)) is not None:
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > 60:
                delay = self.restart_delay  # it had been running well: not a crash loop
            with self._lock:
                self.restarts += 1
            log.warning("job worker %d exited with %s; starting it again in %.1fs", process.pid, code, delay)
            if self._stopping.wait(delay):
                return
            delay = min(2 * delay, 60.0)

    def stop(self, timeout: float = 30.0) -> None:
        """Ask each worker to stop (SIGTERM: its job is checkpointed and queued again); kill one that is still
        running after `timeout` seconds (its job is taken over from its last checkpoint at the next start)."""
        with self._lock:
            self._stopping.set()
        running = [p for p in self.processes if p is not None and p.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for thread in self._threads:
            thread.join()
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
