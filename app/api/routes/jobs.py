"""Queued ingestion jobs (store=postgres): an upload answers 202 with a job; this follows it.

A job is readable by the key that queued it and by admin keys; for any other key it does not exist (404, the
same answer as an unknown id, so ids cannot be probed). Ids are random (ingest.pg_jobs)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from starlette.concurrency import run_in_threadpool

from app.api.deps import KeyDep, ServiceDep, SettingsDep, may_read_job
from app.api.schemas import JOB_ID_PATTERN, JobPublic, error_responses

router = APIRouter(prefix="/api/v1", tags=["documents"])


@router.get("/jobs/{job_id}", response_model=JobPublic, response_model_exclude_none=True,
            summary="An ingestion job: state, progress, and its report when done",
            responses=error_responses(401, 404, 422, 503, e404="No such job, or not this key's (only the key that "
                                      "queued a job and admin keys may read it), or this store ingests in the "
                                      "request"))
async def get_job(job_id: Annotated[str, Path(pattern=JOB_ID_PATTERN, min_length=16, max_length=64,
                                              description="The id an upload answered (random, URL-safe)")],
                  service: ServiceDep, settings: SettingsDep, token: KeyDep) -> Any:
    job = await run_in_threadpool(service.job, job_id)
    if job is None or not may_read_job(job.get("owner"), token, settings):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job with id {job_id}")
    return job
