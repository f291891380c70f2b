"""Queued ingestion jobs (store=postgres): an upload answers 202 with a job; this follows it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from starlette.concurrency import run_in_threadpool

from app.api.deps import KeyDep, ServiceDep
from app.api.schemas import JobPublic, error_responses

router = APIRouter(prefix="/api/v1", tags=["documents"])


@router.get("/jobs/{job_id}", response_model=JobPublic, response_model_exclude_none=True,
            summary="An ingestion job: state, progress, and its report when done",
            responses=error_responses(401, 404, 422, 503, e404="No such job (or this store ingests in the request)"))
async def get_job(job_id: Annotated[int, Path(ge=1, le=2**62)], service: ServiceDep, _: KeyDep) -> Any:
    job = await run_in_threadpool(service.job, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job with id {job_id}")
    return job
