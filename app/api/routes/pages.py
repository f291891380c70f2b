"""GET /api/v1/documents/{doc_id}/pages/{n}: a page or slide as a PNG (contract: docs/previews.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from app.api.conditional import none_match
from app.api.deps import KeyDep, ServiceDep
from app.api.schemas import error_responses
from app.previews import NoPreview, NotReady

router = APIRouter(prefix="/api/v1", tags=["documents"])
CACHE_CONTROL = "private, max-age=86400"  # a document id names fixed bytes: its pages never change

PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "The page as a PNG image"},
    304: {"description": "Not modified: If-None-Match matched the ETag (weak comparison; a list, or *)"},
}


@router.get(
    "/documents/{doc_id}/pages/{n}", summary="A page or slide of a document as a PNG image",
    response_class=Response,
    responses={**PNG_RESPONSE, **error_responses(
        401, 404, 422, 503,
        e404="No such document or page, a format without pages (Markdown, HTML, text), or no preview can be made "
             "(detail.reason: unknown_document, no_pages, no_such_page, unavailable)",
        e503="The preview is being prepared (LibreOffice converts PPTX/DOCX once), or every drawing slot is taken "
             "(detail.reason: preparing, drawing, busy): retry after Retry-After")})
async def page_image(
    doc_id: str, n: Annotated[int, Path(ge=1, le=100_000, description="1-based page or slide number, as in a "
                                        "citation's location.page / location.slide")],
    service: ServiceDep, request: Request, _: KeyDep,
    size: Annotated[Literal["thumb", "full"], Query(description="thumb: 320 px on the long edge; "
                                                    "full: 1600 px")] = "thumb",
) -> Response:
    try:
        image = await run_in_threadpool(service.page_image, doc_id, n, size)
    except NoPreview as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            {"message": str(exc), "reason": exc.reason, **exc.extra}) from None
    except NotReady as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, {"message": str(exc), "reason": exc.reason},
                            headers={"Retry-After": str(exc.retry_after)}) from None
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": image.etag}
    if none_match(request.headers.getlist("if-none-match"), image.etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(image.data, media_type=image.media_type, headers=headers)
