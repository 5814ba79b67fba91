"""`python -m gptkit.server.worker` with two hooks a job's metadata turns on, for tests/test_server_jobs.py:

hold_at_step: after step N, record it and wait until the job is asked to cancel or pause (so the request lands
    at a known step, whatever the machine's speed);
kill_at_step: after step N, record the steps so far and SIGKILL this worker (once per job: a marker file in the
    data directory remembers).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from gptkit.server import runner, worker
from gptkit.server.store import JobRow
from gptkit.training.events import Event, StepEvent

_on_event = runner.JobRun.on_event


def on_event(self: runner.JobRun, event: Event) -> None:
    _on_event(self, event)
    hooks = self.job.metadata or {}
    if not isinstance(event, StepEvent):
        return
    if hooks.get("hold_at_step") == str(event.step):
        self._flush(force=True)  # the test waits for this step's event before it asks
        deadline = time.monotonic() + 300
        while self.store.get(JobRow, self.job.id).requested_action is None and time.monotonic() < deadline:
            time.sleep(0.02)
    marker = self.store.data_dir / f"killed-{self.job.id}"
    if hooks.get("kill_at_step") == str(event.step) and not marker.exists():
        self._flush(force=True)  # (the worker records steps every second, so the test knows what to expect)
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)


runner.JobRun.on_event = on_event  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(worker.main())
