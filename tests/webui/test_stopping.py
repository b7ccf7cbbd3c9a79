"""SIGTERM during a job: the waiting callers are told the server is stopping (issue 9)."""

from __future__ import annotations

import signal
import threading
import time

import httpx
from conftest import start_server


def test_sigterm_during_a_job_answers_the_waiting_caller_that_the_server_is_stopping(
    tmp_path,
):
    servers = start_server(tmp_path, "personal")
    server = next(servers)
    answers: list[httpx.Response] = []
    try:
        body = {"prompt": "a lighthouse", "steps": 150, "width": 64, "height": 64}

        def paint() -> None:
            with httpx.Client(base_url=server.url, timeout=120) as http:
                answers.append(http.post("/sdapi/v1/txt2img", json=body))

        caller = threading.Thread(target=paint)
        caller.start()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if http.get("/sdapi/v1/progress").json()["state"]["sampling_step"] >= 1:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the job never started")
        server.process.send_signal(signal.SIGTERM)
        caller.join(60)
        assert answers, "the caller got no answer"
        answer = answers[0]
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "shutting_down"
        assert "stopping" in answer.json()["detail"]
        assert server.process.wait(30) is not None
    finally:
        next(servers, None)  # the fixture's clean-up (the process has already ended)
