from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, Request, UploadFile, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import AdminDep, KeyDep, ServiceDep, SettingsDep, bearer_token, can_write, job_owner
from app.api.schemas import (
    MAX_FILES_PER_UPLOAD,
    Deleted,
    DocumentPublic,
    DocumentsPublic,
    JobPublic,
    UploadResponse,
    WhoAmI,
    error_responses,
)
from ingest.errors import UnsupportedFileType
from ingest.loaders import kind_for_name
from ingest.names import display_name
from ingest.pipeline import SourceFile

router = APIRouter(prefix="/api/v1", tags=["documents"])


def safe_name(raw: str | None) -> str:
    """The uploaded file name as the document's name (ingest.names.display_name): a relative path is kept
    (`filename=week2/slides.pdf` names week2/slides.pdf, so two index.md files can both be uploaded), without
    "..", a leading "/", control, bidi-override or zero-width characters; long names keep their extension."""
    return display_name(raw or "") or "upload"


@router.get("/documents", response_model=DocumentsPublic, response_model_exclude_none=True,
            summary="List indexed documents", responses=error_responses(401, 503))
async def list_documents(service: ServiceDep, _: KeyDep) -> Any:
    docs = await run_in_threadpool(service.documents)
    return {"documents": docs, "count": len(docs)}


@router.get("/documents/{doc_id}", response_model=DocumentPublic, response_model_exclude_none=True,
            summary="One document", responses=error_responses(401, 404, 422, 503, e404="No such document"))
async def get_document(doc_id: str, service: ServiceDep, _: KeyDep) -> Any:
    doc = await run_in_threadpool(service.document, doc_id)
    if doc is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document with id {doc_id!r}")
    return doc


@router.delete("/documents/{doc_id}", response_model=Deleted, summary="Delete a document and its chunks",
               responses=error_responses(401, 403, 404, 422, 503, e404="No such document"))
async def delete_document(doc_id: str, service: ServiceDep, _: AdminDep) -> dict[str, Any]:
    if not await run_in_threadpool(service.delete, doc_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document with id {doc_id!r}")
    return {"deleted": doc_id}


@router.post("/documents", response_model=UploadResponse, summary="Upload lecture files (multipart, one or more)",
             responses={**error_responses(401, 403, 413, 415, 422, 503, e413="A file is over the size limit",
                                          e422="A malformed body, or no file could be ingested (per-file reasons)"),
                        202: {"model": JobPublic, "description": "Queued for the ingest workers (store=postgres): "
                              "follow the job at the Location header, GET /api/v1/jobs/{id}"}})
async def upload_documents(files: Annotated[list[UploadFile], File(
                               min_length=1, max_length=MAX_FILES_PER_UPLOAD,
                               description="PDF, PPTX, DOCX, MD, HTML, TXT: the type is read from each file name's "
                               "extension (none supported: 415; none could be parsed: 422 with per-file reasons)")],
                           request: Request, service: ServiceDep, settings: SettingsDep, _: AdminDep) -> Any:
    limit = settings.max_upload_bytes
    sources: list[SourceFile] = []
    unsupported: list[dict[str, Any]] = []
    for up in files:
        name = safe_name(up.filename)
        try:
            kind_for_name(name)
        except UnsupportedFileType as exc:
            unsupported.append({"name": name, "status": "skipped", "reason": str(exc)})
            continue
        data = await up.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                                f"{name} is over the upload limit of {settings.max_upload_mb:g} MiB")
        sources.append(SourceFile(name=name, data=data, source="upload"))
    if not sources:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            unsupported[0]["reason"] if unsupported else "no file was sent")
    if service.queued:
        owner = job_owner(bearer_token(request.headers.get("authorization")), settings)
        job = await run_in_threadpool(service.enqueue, sources, owner)
        return JSONResponse(JobPublic.model_validate(job).model_dump(), status.HTTP_202_ACCEPTED,
                            headers={"Location": f"/api/v1/jobs/{job['id']}"})
    report = await run_in_threadpool(service.ingest, sources)
    body = report.public()
    body["files"] = sorted(body["files"] + unsupported, key=lambda f: f["name"])
    if report.error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, report.error)
    if all(f["status"] == "skipped" for f in body["files"]):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY,
                            {"message": "no file could be ingested", "files": body["files"]})
    return body


@router.get("/whoami", response_model=WhoAmI, summary="What this key may do (used by the web page)",
            responses=error_responses(401))
async def whoami(request: Request, settings: SettingsDep, token: KeyDep) -> dict[str, Any]:
    return {"auth_required": bool(settings.api_key_set), "can_write": can_write(token, settings)}
