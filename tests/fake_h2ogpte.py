"""A local fake h2oGPTe server for driving the REAL h2ogpte 1.7.5 client (../shared/docs/h2ogpte-client.md).

Faithful to what the client sends and validates: the `/rpc/meta` version check with every required Meta field;
`/api/v1` error bodies `{"code", "message"}` and `/rpc` ones `{"error"}`; 201 from every creating endpoint;
every required field of Collection, JobDetails, Document, ChatSession, ChunkSearchResult and message
references; ingest jobs that are "in progress" on the first poll; a FAILED job has overall_status "failed",
failed_percentage 1 and errors; the chat websocket's cq -> cx, cp (deltas), ca frames, `ce` error frames, and
a 403 handshake on a bad key. Bearer auth on every call.

Documents are parsed with the project's own loaders (one chunk per page, slide or section) and searched by
shared keywords; the "LLM" answers with the best chunk's sentence that shares most keywords with the question.

Scripting: `mode` ("ok", "429-once", "500", "hang", "refuse") applies to answer_question and chunk search;
`chat_mode` ("ok", "hang", "error", "refuse", "paraphrase") to the websocket; files named in `fail_names`
fail their ingest job.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from ingest.loaders import load_document
from ingest.textnorm import keyword_tokens
from tests.server import free_port

META = {
    "version": "1.7.5", "build": "fake", "username": "student", "user_id": "u1", "subject": "u1",
    "email": "student@example.edu", "is_guest": False, "license_expired": False, "license_expiry_date": "2099-01-01",
    "global_configs": [], "user_configs": [], "picture": None, "groups": None, "workspaces": None, "permissions": [],
    "ui_config": {"logo": "", "chat_logo": "", "primary_color": "", "chat_name": "", "greeting": "",
                  "show_private_button": False, "show_workers_status": False, "show_live_logs": False,
                  "show_eval": False, "show_extractors": False, "public_mode": False},
}


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _error(code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=code)


class FakeH2OGPTe:
    def __init__(self, api_key: str = "sk-good") -> None:
        self.api_key = api_key
        self.mode = "ok"
        self.chat_mode = "ok"
        self.fail_names: set[str] = set()
        self.cumulative_partials = False
        self.calls: list[dict[str, Any]] = []
        self.frames: list[dict[str, Any]] = []  # every "cq" frame received
        self.collections: dict[str, dict[str, Any]] = {}
        self.uploads: dict[str, tuple[str, bytes]] = {}
        self.documents: dict[str, dict[str, Any]] = {}  # id -> Document fields + "_collection", "_chunks"
        self.jobs: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.sessions: dict[str, str] = {}  # chat session id -> collection id
        self.references: dict[str, list[dict[str, Any]]] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[
            Route("/rpc/meta", self.meta),
            Route("/rpc/fs", self.upload, methods=["PUT"]),
            Route("/api/v1/models", self.models),
            Route("/api/v1/models/{model}/answer_question", self.answer_question, methods=["POST"]),
            Route("/api/v1/collections", self.collections_route, methods=["GET", "POST"]),
            Route("/api/v1/collections/{cid}/documents", self.list_documents),
            Route("/api/v1/collections/{cid}/documents/delete_job", self.delete_job, methods=["POST"]),
            Route("/api/v1/collections/{cid}/chunks/search", self.search_chunks, methods=["POST"]),
            Route("/api/v1/uploads/{upload_ids}/ingest/job", self.ingest_job, methods=["POST"]),
            Route("/api/v1/jobs/{job_id}", self.get_job),
            Route("/api/v1/chats", self.create_chat, methods=["POST"]),
            Route("/api/v1/messages/{message_id}/references", self.message_references),
            WebSocketRoute("/ws", self.chat_socket),
        ])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=1))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> FakeH2OGPTe:
        self._thread.start()
        deadline = time.time() + 10
        while not self._server.started:
            assert time.time() < deadline, "fake h2oGPTe did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True  # idle keep-alive and websocket connections get 1 s, not a 10 s wait
        self._thread.join(timeout=10)

    def _authorized(self, request: Request | WebSocket) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    # -- meta, models, answer_question --
    async def meta(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse({"error": "invalid API key"}, status_code=401)
        return JSONResponse(META)

    async def models(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return _error(401, "invalid API key")
        return JSONResponse([{"id": "m-1", "display_name": "fake-llm"}, {"id": "m-2", "display_name": "other-llm"}])

    async def _scripted_failure(self) -> JSONResponse | None:
        if self.mode == "429-once":
            self.mode = "ok"
            return _error(429, "rate limited")
        if self.mode == "500":
            return _error(500, "boom")
        if self.mode == "hang":
            await asyncio.sleep(30)
        return None

    async def answer_question(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return _error(401, "invalid API key")
        body = await request.json()
        self.calls.append({"model": request.path_params["model"], **body})
        failure = await self._scripted_failure()
        if failure is not None:
            return failure
        if self.mode == "refuse":
            content = "NOT_IN_SOURCES"
        else:  # cite the first source by number, and one number that does not exist
            context = "\n".join(body.get("text_context_list") or [])
            first = re.search(r'<source n="1"[^>]*>\n(.*?)(?:\n|</source>)', context, re.S)
            sentence = first.group(1).split(". ")[0] if first else "nothing"
            content = f"{sentence} [1]. This also holds [7]."
        return JSONResponse({"content": content, "error": "", "llm": request.path_params["model"],
                             "input_tokens": 100, "output_tokens": 20})

    # -- collections and documents --
    def _collection(self, cid: str, name: str, description: str) -> dict[str, Any]:
        docs = [d for d in self.documents.values() if d["_collection"] == cid]
        return {"id": cid, "name": name, "description": description, "embedding_model": "fake-embedder",
                "document_count": len(docs), "document_size": sum(d["size"] for d in docs),
                "created_at": _now(), "updated_at": _now(), "user_count": 1, "is_public": False,
                "username": "student", "sessions_count": 0, "status": "completed"}

    async def collections_route(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return _error(401, "invalid API key")
        if request.method == "POST":
            body = await request.json()
            cid = str(uuid.uuid4())
            self.collections[cid] = {"name": body["name"], "description": body["description"]}
            self.calls.append({"create_collection": body["name"]})
            return JSONResponse(self._collection(cid, body["name"], body["description"]), status_code=201)
        name_filter = request.query_params.get("name_filter", "")
        found = [self._collection(cid, c["name"], c["description"]) for cid, c in self.collections.items()
                 if name_filter.lower() in c["name"].lower()]
        offset, limit = int(request.query_params.get("offset", 0)), int(request.query_params.get("limit", 100))
        return JSONResponse(found[offset : offset + limit])

    @staticmethod
    def _public_document(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if not k.startswith("_")}

    async def list_documents(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return _error(401, "invalid API key")
        cid = request.path_params["cid"]
        if cid not in self.collections:
            return _error(404, "no such collection")
        docs = [self._public_document(d) for d in self.documents.values() if d["_collection"] == cid]
        offset, limit = int(request.query_params.get("offset", 0)), int(request.query_params.get("limit", 100))
        return JSONResponse(docs[offset : offset + limit])

    async def upload(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse({"error": "invalid API key"}, status_code=401)
        form = await request.form()
        file = form["file"]
        assert not isinstance(file, str), "the upload must be a file part"
        upload_id = str(uuid.uuid4())
        self.uploads[upload_id] = (str(file.filename), await file.read())
        return JSONResponse({"id": upload_id})

    def _job(self, kind: str, status: str, errors: list[str], items: list[str]) -> dict[str, Any]:
        job_id = str(uuid.uuid4())
        self.jobs[job_id] = {
            "id": job_id, "name": kind, "overall_status": status, "passed_percentage": 0.0 if errors else 1.0,
            "failed_percentage": 1.0 if errors else 0.0, "progress": 0.0 if status == "in progress" else 1.0,
            "created_at": _now(), "updated_at": _now(), "kind": kind,
            "statuses": [{"id": i, "status": status} for i in items], "errors": errors,
            "duration": "0s", "duration_seconds": 0.0, "start_time": time.time(),
        }
        return self.jobs[job_id]

    async def ingest_job(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return _error(401, "invalid API key")
        cid = request.query_params.get("collection_id", "")
        if cid not in self.collections:
            return _error(404, "no such collection")
        body = await request.json() if (await request.body()) else {}
        metadata = body.get("metadata") or {}
        errors: list[str] = []
        upload_ids = request.path_params["upload_ids"].split(",")
        for upload_id in upload_ids:
            if upload_id not in self.uploads:
                return _error(404, f"no upload {upload_id}")
            name, data = self.uploads.pop(upload_id)
            if name in self.fail_names:
                errors.append(f"{name}: document conversion failed")
                continue
            doc = load_document(name, data, max_unpacked_bytes=50 * 2**20)
            doc_id = str(uuid.uuid4())
            self.documents[doc_id] = {
                "id": doc_id, "name": name, "username": "student", "type": name.rsplit(".", 1)[-1],
                "size": len(data), "page_count": len(doc.units), "status": "completed",
                "created_at": _now(), "updated_at": _now(), "metadata_dict": metadata.get(upload_id) or {},
                "_collection": cid,
                "_chunks": [{"id": i, "text": u.text, "pages": str(i + 1)} for i, u in enumerate(doc.units)],
            }
        job = self._job("IngestUploadsJob", "failed" if errors else "in progress", errors, upload_ids)
        return JSONResponse(job, status_code=201)

    async def get_job(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return _error(401, "invalid API key")
        job = self.jobs.get(request.path_params["job_id"])
        if job is None:
            return _error(404, "no such job")
        self.polls[job["id"]] = self.polls.get(job["id"], 0) + 1
        if job["overall_status"] == "in progress" and self.polls[job["id"]] >= 2:
            job.update(overall_status="completed", progress=1.0, updated_at=_now(),
                       statuses=[{"id": s["id"], "status": "completed"} for s in job["statuses"]])
        return JSONResponse(job)

    async def delete_job(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return _error(401, "invalid API key")
        ids = (await request.json())["document_ids"]
        for doc_id in ids:
            self.documents.pop(doc_id, None)
        return JSONResponse(self._job("DeleteDocumentsFromCollectionJob", "completed", [], ids), status_code=201)

    # -- search and chat --
    def _ranked(self, cid: str, query: str, topics: list[str] | None = None) -> list[dict[str, Any]]:
        terms = set(keyword_tokens(query))
        hits = []
        for d in self.documents.values():
            if d["_collection"] != cid or (topics and d["id"] not in topics):
                continue
            for c in d["_chunks"]:
                score = len(terms & set(keyword_tokens(c["text"]))) / max(len(terms), 1)
                if score > 0:
                    hits.append({"text": c["text"], "id": c["id"], "name": d["name"], "size": len(c["text"]),
                                 "pages": c["pages"], "topic": d["id"], "score": round(score, 4)})
        return sorted(hits, key=lambda h: -h["score"])

    async def search_chunks(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return _error(401, "invalid API key")
        body = await request.json()
        self.calls.append({"search": body})
        failure = await self._scripted_failure()
        if failure is not None:
            return failure
        hits = self._ranked(request.path_params["cid"], body["query"], body.get("topics"))
        offset, limit = body.get("offset") or 0, body.get("limit") or 10
        return JSONResponse(hits[offset : offset + limit])

    async def create_chat(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return _error(401, "invalid API key")
        sid = str(uuid.uuid4())
        self.sessions[sid] = request.query_params.get("collection_id", "")
        return JSONResponse({"id": sid, "updated_at": _now()}, status_code=201)

    async def message_references(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return _error(401, "invalid API key")
        return JSONResponse(self.references.get(request.path_params["message_id"], []))

    async def chat_socket(self, ws: WebSocket) -> None:
        if not self._authorized(ws):
            await ws.close(code=1008)  # closing before accept: the client sees a 403 handshake
            return
        sid = ws.query_params.get("currentSessionID", "")
        await ws.accept()
        try:
            while True:
                frame = json.loads(await ws.receive_text())
                self.frames.append(frame)
                await self._answer_frame(ws, sid, frame)
        except Exception:  # the client closed the socket
            return

    async def _answer_frame(self, ws: WebSocket, sid: str, frame: dict[str, Any]) -> None:
        question_id, answer_id = str(uuid.uuid4()), str(uuid.uuid4())
        await ws.send_text(json.dumps({"t": "cx", "session_id": sid, "correlation_id": frame["correlation_id"],
                                       "message_id": question_id, "username": "student", "body": frame["body"]}))
        base = {"session_id": sid, "message_id": answer_id, "reply_to_id": question_id, "error": ""}
        if self.chat_mode == "hang":
            await asyncio.sleep(60)
            return
        if self.chat_mode == "error":
            await ws.send_text(json.dumps({**base, "t": "ce", "body": "", "error": "the LLM is overloaded"}))
            return
        rag = json.loads(frame.get("rag_config") or "{}")
        hits = self._ranked(self.sessions.get(sid, ""), frame["body"])[: rag.get("rag_max_chunks", 5)]
        if self.chat_mode == "refuse" or not hits:
            answer, hits = "NOT_IN_SOURCES", []
        elif self.chat_mode == "paraphrase":  # an answer sharing no content word with its references
            answer = "Yes, that is how it works."
        else:
            terms = set(keyword_tokens(frame["body"]))
            sentences = re.split(r"(?<=[.!?])\s+", hits[0]["text"].replace("\n", " ").strip())
            answer = max(sentences, key=lambda x: len(terms & set(keyword_tokens(x))))
        pieces = re.findall(r"\S+\s*", answer)
        for i in range(0, len(pieces), 3):  # deltas of three words (or, cumulative_partials, the text so far)
            body = "".join(pieces[: i + 3] if self.cumulative_partials else pieces[i : i + 3])
            await ws.send_text(json.dumps({**base, "t": "cp", "body": body}))
        self.references[answer_id] = [
            {"collection_id": self.sessions.get(sid), "document_id": h["topic"], "document_name": h["name"],
             "chunk_id": h["id"], "pages": h["pages"], "score": h["score"], "content": h["text"],
             "were_references_deleted": False} for h in hits]
        await ws.send_text(json.dumps({**base, "t": "ca", "body": answer}))
