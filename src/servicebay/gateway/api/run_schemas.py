"""The JSON shapes of `/api/v1/runs` and of triggering a run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from servicebay.core.models import Deployment, Run
from servicebay.gateway.schemas import Strict
from servicebay.runtime.runs import Artifact


class RunIn(Strict):
    input: dict[str, Any] | None = Field(
        default=None,
        description="Handed to the script as a JSON file named by env BAY_RUN_INPUT.",
        examples=[{"day": "2026-11-27"}],
    )


class RunOut(BaseModel):
    id: str
    deployment: str
    version: int
    trigger: str = Field(description="schedule, webhook, manual or retry.")
    attempt: int = Field(description="1, then 2, 3... for its retries.")
    status: str = Field(
        description="queued, running, succeeded, failed, timed_out, cancelled or skipped."
    )
    actor: str | None = Field(description="Who triggered it (its first attempt).")
    input: dict[str, Any] | None
    due_at: datetime | None = Field(description="The scheduled time a cron run is for.")
    not_before: datetime | None = Field(
        description="A queued run does not start before this time (a retry's backoff)."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    reason: str | None = Field(description="How it ended, in words.")
    cancel_requested: bool
    log_bytes: int
    log_truncated: bool = Field(description="The log reached the instance's cap and was cut.")
    worker: str | None = Field(description="The worker that ran it: host:pid:start.")

    @classmethod
    def of(cls, run: Run, deployment: Deployment) -> RunOut:
        fields = {name: getattr(run, name) for name in cls.model_fields if name != "deployment"}
        return cls(**fields, deployment=deployment.name)


class LogChunkOut(BaseModel):
    id: int = Field(description="Pass the last one as `after` to read what comes next.")
    text: str = Field(description="Whole lines: `<UTC time>Z stdout|stderr <text>`.")


class LogOut(BaseModel):
    chunks: list[LogChunkOut]
    done: bool = Field(description="The run has ended and these chunks reach its log's end.")


class ArtifactOut(BaseModel):
    path: str = Field(description="Relative to BAY_OUTPUT_DIR, `/` between folders.")
    size: int

    @classmethod
    def of(cls, artifact: Artifact) -> ArtifactOut:
        return cls(path=artifact.path, size=artifact.size)
