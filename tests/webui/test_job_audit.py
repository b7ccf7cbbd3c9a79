"""Jobs leave an audit trail of ids and outcomes only: never a prompt or a user name."""

from __future__ import annotations

from core.engine import GenerationRequest
from core.jobs import JobQueue
from privacy.auditlog import AuditLog
from webui.studio import job_auditor


def test_job_start_and_end_are_audited_with_pseudonymous_ids_only(engine, tmp_path):
    audit = AuditLog(tmp_path / "audit")
    queue = JobQueue([engine], on_event=job_auditor(audit))
    queue.start()
    owner = "u_" + "a" * 32
    try:
        job = queue.submit(
            GenerationRequest("alice's secret garden", width=64, height=64, num_inference_steps=1),
            owner=owner,
        )
        job.wait(60)
        personal = queue.submit(
            GenerationRequest("x", width=64, height=64, num_inference_steps=1), owner="personal"
        )
        personal.wait(60)
    finally:
        queue.stop()
    events = list(audit.events())
    mine = [e for e in events if e.get("job") == job.id]
    assert [e["event"] for e in mine] == ["job_started", "job_ended"]
    assert mine[1]["outcome"] == "done" and mine[1]["user"] == owner and mine[1]["kind"] == "txt2img"
    assert all("user" not in e for e in events if e.get("job") == personal.id)
    raw = "".join(p.read_text() for p in (tmp_path / "audit").iterdir())
    assert "secret garden" not in raw and "personal" not in raw
