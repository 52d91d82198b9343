"""Rows to the public JSON objects (the shape of Replicate / OpenAI batch jobs)."""

from datetime import datetime, timezone

from service.jobs.store import JobStatus


def iso(timestamp):
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_body(row):
    error = {"code": row["error_code"], "message": row["error_message"]} if row["error_code"] else None
    succeeded = row["status"] == JobStatus.succeeded and row["result_path"]
    return {
        "id": row["id"],
        "object": "job",
        "task": row["task"],
        "model": row["model"],
        "status": row["status"],
        "progress": round(row["progress"] or 0.0, 4),
        "attempts": row["attempts"],
        "max_attempts": row["max_attempts"],
        "cancel_requested": bool(row["cancel_requested"]),
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "error": error,
        "result_url": f"/v1/jobs/{row['id']}/result" if succeeded else None,
        "result_bytes": row["result_bytes"] if succeeded else None,
        "frames": row["frames"],
        "inputs": row["inputs"],
        "options": row["options"],
        "batch_id": row["batch_id"],
        "worker_id": row["worker_id"],
        "info": row["info"],
        "webhook": {"url": row["webhook_url"], "state": row["webhook_state"],
                    "attempts": row["webhook_attempts"]} if row["webhook_url"] else None,
    }
