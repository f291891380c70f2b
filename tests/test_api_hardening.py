"""The HTTP edge of the API against a real uvicorn: offline docs, the bearer scheme and documented errors in the
OpenAPI, keys and body limits enforced before a body is read, strict request bodies, Allow, CORS."""

from __future__ import annotations

import http.client
import re
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.builders import make_pdf
from tests.conftest import SAMPLES
from tests.server import Server

SAMPLE = SAMPLES / "04-attention-notes.txt"
ORIGIN = "https://course.example.edu"
STUDENT = {"Authorization": "Bearer student-key"}
ADMIN = {"Authorization": "Bearer admin-key"}


@pytest.fixture(scope="module")
def open_server(tmp_path_factory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("hardening") / "data",
                 env={"LECTURE_QA_MAX_UPLOAD_MB": "2", "LECTURE_QA_CORS_ORIGINS": ORIGIN})
    srv.wait_ready()
    assert srv.upload(SAMPLE).status_code == 200
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("hardening-keys") / "data",
                 env={"LECTURE_QA_API_KEYS": "student-key,admin-key", "LECTURE_QA_ADMIN_KEYS": "admin-key"})
    srv.wait_ready()
    yield srv
    srv.stop()


@pytest.fixture()
def client(open_server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=open_server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def sample_id(open_server) -> str:
    docs = httpx.get(f"{open_server.url}/api/v1/documents").json()["documents"]
    return next(d["id"] for d in docs if d["name"] == SAMPLE.name)


def send_head_only(url: str, method: str, path: str, headers: dict[str, str], body_prefix: bytes = b"",
                   timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Send a request's headers (and maybe the start of its body) but never the rest of the body it declares,
    then read the answer. A server that waits for the whole body before answering makes this time out."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", *(f"{k}: {v}" for k, v in headers.items())]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body_prefix)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


# 1. Swagger UI and ReDoc from vendored assets

@pytest.mark.parametrize(("page", "assets"), [
    ("/docs", ["/static/vendor/swagger-ui-bundle.js", "/static/vendor/swagger-ui.css"]),
    ("/redoc", ["/static/vendor/redoc.standalone.js"]),
])
def test_docs_pages_load_only_vendored_assets(client, page, assets):
    r = client.get(page)
    assert "default-src 'self'" in r.headers["content-security-policy"]  # nothing else may load either
    html = r.text
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert set(assets) <= set(urls)
    assert all(u.startswith("/") for u in urls), urls  # nothing from a CDN, fonts or favicon included
    assert "validator.swagger.io" not in html and "googleapis" not in html
    for url in urls:
        r = client.get(url)
        assert r.status_code == 200 and len(r.content) > 500, url
    assert "/openapi.json" in html


# 2. and 3. the OpenAPI: bearer scheme, every error documented with its JSON shape

EXPECTED_ERRORS = {
    ("post", "/api/v1/search"): {"401", "404", "413", "422", "503"},
    ("post", "/api/v1/ask"): {"401", "404", "413", "422", "503"},
    ("get", "/api/v1/models"): {"401", "502", "503"},
    ("get", "/api/v1/documents"): {"401", "503"},
    ("post", "/api/v1/documents"): {"401", "403", "413", "415", "422", "503"},
    ("get", "/api/v1/documents/{doc_id}"): {"401", "404", "422", "503"},
    ("delete", "/api/v1/documents/{doc_id}"): {"401", "403", "404", "422", "503"},
    ("get", "/api/v1/whoami"): {"401"},
}


@pytest.mark.parametrize("keys", [True, False])
def test_openapi_declares_the_bearer_scheme_on_api_routes(open_server, keyed_server, keys):
    """Required where keys are configured; optional (`{}` beside it) where they are not, as the server behaves."""
    spec = httpx.get(f"{(keyed_server if keys else open_server).url}/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values() if s["type"] == "http"] == ["bearer"]
    name = next(iter(schemes))
    declared = [{name: []}] if keys else [{name: []}, {}]
    for path, ops in spec["paths"].items():
        for op in ops.values():
            assert (op.get("security") == declared) == path.startswith(("/api/", "/v1/")), path


def test_openapi_documents_every_error_with_the_error_shape(client):
    spec = client.get("/openapi.json").json()
    ops = {(m, p): op for p, item in spec["paths"].items() for m, op in item.items()}
    assert set(EXPECTED_ERRORS) <= set(ops)
    for key, codes in EXPECTED_ERRORS.items():
        responses = ops[key]["responses"]
        errors = {c for c in responses if c[0] in "45"}
        assert errors == codes, key
        for code in errors:
            schema = responses[code]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (key, code)
    error_shape = spec["components"]["schemas"]["ErrorResponse"]
    assert error_shape["required"] == ["error"] and set(error_shape["properties"]) == {"error", "detail"}
    ready = ops[("get", "/readyz")]["responses"]["503"]["content"]["application/json"]["schema"]
    assert ready == {"$ref": "#/components/schemas/NotReady"}


# 4. keys checked before the body is read

@pytest.mark.parametrize(("path", "headers", "status"), [
    ("/api/v1/search", {}, 401),
    ("/api/v1/search", {"Authorization": "Bearer wrong"}, 401),
    ("/api/v1/documents", {}, 401),
    ("/api/v1/documents", STUDENT, 403),  # a read-only key cannot make the server spool an upload either
])
def test_key_refused_before_a_huge_body_is_read(keyed_server, path, headers, status):
    upload = path == "/api/v1/documents"
    content_type = "multipart/form-data; boundary=x" if upload else "application/json"
    declared = {"Content-Type": content_type, "Content-Length": str(900 * 2**20), **headers}
    code, got, body = send_head_only(keyed_server.url, "POST", path, declared, b"--x\r\n" if upload else b'{"q')
    assert code == status and b'"error"' in body
    assert (got.get("www-authenticate") == "Bearer") == (status == 401)


def test_keys_still_let_the_right_requests_through(keyed_server):
    url = keyed_server.url
    assert httpx.post(f"{url}/api/v1/search", json={"query": "rnn"}, headers=STUDENT).status_code == 200
    assert httpx.get(f"{url}/api/v1/whoami", headers=ADMIN).json() == {"auth_required": True, "can_write": True}
    r = httpx.delete(f"{url}/api/v1/documents/nope", headers=STUDENT)
    assert r.status_code == 403 and r.json()["error"] == "this API key may not upload or delete documents"
    assert httpx.delete(f"{url}/api/v1/documents/nope", headers=ADMIN).status_code == 404
    assert httpx.get(f"{url}/healthz").status_code == 200


# 5. body limits per route, chunked bodies counted

def test_json_route_refuses_a_declared_large_body_unread(open_server):
    declared = {"Content-Type": "application/json", "Content-Length": str(2 * 2**20)}
    code, _, body = send_head_only(open_server.url, "POST", "/api/v1/search", declared, b'{"query": "')
    assert code == 413 and b"over the limit" in body


def test_upload_route_refuses_a_declared_body_over_its_limit_unread(open_server):
    declared = {"Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(900 * 2**20)}
    code, _, body = send_head_only(open_server.url, "POST", "/api/v1/documents", declared, b"--x\r\n")
    assert code == 413 and b"MiB a file" in body


def test_chunked_json_body_is_counted(client):
    def chunks() -> Iterator[bytes]:
        yield b'{"query": "'
        for _ in range(40):
            yield b"a" * 65536  # 2.5 MiB in all, sent without a Content-Length
        yield b'"}'

    r = client.post("/api/v1/search", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "over the limit" in r.json()["error"]


def test_the_largest_valid_body_is_under_the_json_limit(client):
    longest = "\U0001F600" * 2000  # each one 12 bytes of JSON escapes
    body = {"question": longest, "history": [longest] * 20, "document_ids": ["\U0001F600" * 64] * 500}
    r = client.post("/api/v1/ask", json=body)
    assert r.status_code == 404 and "no document with id" in r.json()["error"]  # read and validated, not 413


def test_upload_route_keeps_the_upload_limit(client):
    body = b"x" * (3 * 2**20 // 2)  # over the JSON limit, under the upload limit: reaches the route
    r = client.post("/api/v1/documents", files=[("files", ("big.exe", body))])
    assert r.status_code == 415


# 6. history bounds

@pytest.mark.parametrize(("history", "statuses"), [
    (["x" * 2001], {422}),
    (["what is an RNN?"] * 21, {422}),
    (["x" * (10 * 2**20)], {413, 422}),
])
def test_history_is_bounded(client, history, statuses):
    r = client.post("/api/v1/ask", json={"question": "and the GRU?", "history": history})
    assert r.status_code in statuses and r.json()["error"]


# 7. strict types, 8. every malformed body is 422, 11. blank text and unknown documents

@pytest.mark.parametrize(("path", "kwargs"), [
    ("/api/v1/ask", {"json": {"question": "What is an RNN?", "stream": 0}}),
    ("/api/v1/ask", {"json": {"question": "What is an RNN?", "top_k": "5"}}),
    ("/api/v1/search", {"json": {"query": "rnn", "top_k": "5"}}),
    ("/api/v1/search", {"json": {"query": "rnn", "top_k": 5.5}}),
    ("/api/v1/search", {"json": {"query": "rnn", "top_k": True}}),
    ("/api/v1/search", {"json": {"query": "\x1c\ufeff\u3000"}}),  # blank to JSON Schema's pattern and to Python
    ("/api/v1/search", {"json": {"query": 5}}),
    ("/api/v1/ask", {"json": {"question": "   \n\t "}}),
    ("/api/v1/search", {"json": {"query": " "}}),
    ("/api/v1/search", {"content": b'{"query": "rnn"', "headers": {"Content-Type": "application/json"}}),
    ("/api/v1/search", {"content": b'{"query": "\xff\xfe"}', "headers": {"Content-Type": "application/json"}}),
    ("/api/v1/search", {"content": b'{"query": "rnn"}', "headers": {"Content-Type": "text/plain"}}),
    ("/api/v1/search", {"content": b'{"query": "rnn"}'}),
    ("/api/v1/search", {"json": ["rnn"]}),
    ("/api/v1/documents", {"content": b"--x\r\nnot a part", "headers": {"Content-Type": "multipart/form-data"}}),
    ("/api/v1/documents", {"content": b"garbage", "headers": {"Content-Type": "multipart/form-data; boundary=x"}}),
    ("/api/v1/documents", {"json": {"files": []}}),
    ("/api/v1/documents", {"files": [("other", ("a.txt", b"x"))]}),  # no part named files: minItems 1
    ("/api/v1/documents", {"files": [("files", (f"f{i}.txt", b"x")) for i in range(21)]}),  # maxItems 20
])
def test_malformed_or_mistyped_bodies_are_422(client, path, kwargs):
    r = client.post(path, **kwargs)
    assert r.status_code == 422, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"]


@pytest.mark.parametrize("top_k", [3, 3.0, 3e0])
def test_integral_numbers_are_integers_as_json_schema_says(client, top_k):
    """The published schema says "integer", which JSON Schema satisfies with 3.0: the route agrees."""
    r = client.post("/api/v1/search", json={"query": "attention", "top_k": top_k})
    assert r.status_code == 200 and len(r.json()["results"]) == 3, r.text
    r = client.post("/api/v1/ask", json={"question": "What does attention compute?", "top_k": top_k})
    assert r.status_code == 200 and len(r.json()["sources"]) == 3, r.text


def test_published_limits_match_the_routes(client):
    """What the schema allows the routes take, and what it forbids they refuse: upload count, blank text."""
    spec = client.get("/openapi.json").json()["components"]["schemas"]
    files = spec["Body_upload_documents_api_v1_documents_post"]["properties"]["files"]
    assert (files["minItems"], files["maxItems"]) == (1, 20)
    pattern = re.compile(spec["SearchRequest"]["properties"]["query"]["pattern"])
    for blank in ("\x1c", "\ufeff", "\x85 ", "\u3000\t"):  # whitespace to Python or to ECMAScript's \s
        assert not pattern.search(blank)
        assert client.post("/api/v1/search", json={"query": blank}).status_code == 422
    assert pattern.search("\x00") and client.post("/api/v1/search", json={"query": "\x1cRNN\ufeff"}).status_code == 200
    r = client.post("/api/v1/documents", files=[("files", (f"copy{i}.txt", SAMPLE.read_bytes())) for i in range(20)])
    assert r.status_code == 200 and len(r.json()["files"]) == 20


def test_strict_models_still_take_plain_json(client):
    r = client.post("/api/v1/ask", json={"question": "  What does attention compute?  ", "top_k": 3,
                                         "stream": False, "history": ["What is an RNN?"]})
    assert r.status_code == 200 and len(r.json()["sources"]) == 3


def test_unknown_document_ids_are_404_naming_them(client, sample_id):
    for path, field in (("/api/v1/search", "query"), ("/api/v1/ask", "question")):
        r = client.post(path, json={field: "attention", "document_ids": [sample_id, "nope-1", "nope-2"]})
        assert r.status_code == 404, r.text
        assert "'nope-1'" in r.json()["error"] and "'nope-2'" in r.json()["error"]
        assert r.json()["detail"]["unknown_document_ids"] == ["nope-1", "nope-2"]
        assert client.post(path, json={field: "attention", "document_ids": [sample_id]}).status_code == 200


# 9. Allow lists what the path really supports

@pytest.mark.parametrize(("path", "allow", "wrong"), [
    ("/api/v1/documents", "GET, HEAD, OPTIONS, POST", "PUT"),
    ("/api/v1/documents/abc", "DELETE, GET, HEAD, OPTIONS", "POST"),
    ("/api/v1/documents/abc/pages/1", "GET, HEAD, OPTIONS", "DELETE"),
    ("/api/v1/search", "OPTIONS, POST", "GET"),
    ("/api/v1/search", "OPTIONS, POST", "HEAD"),
])
def test_options_and_405_list_the_allowed_methods(client, path, allow, wrong):
    r = client.options(path)
    assert r.status_code == 204 and r.headers["allow"] == allow
    r = client.request(wrong, path)
    assert r.status_code == 405 and r.headers["allow"] == allow
    assert r.json()["error"] if wrong != "HEAD" else r.content == b""


def test_options_on_an_unknown_path_is_404(client):
    assert client.options("/api/v1/nothing-here").status_code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("headers", [STUDENT, ADMIN, {}], ids=["member", "admin", "no-key"])
def test_a_method_a_path_does_not_have_is_405_before_any_key_check(keyed_server, method, headers):
    """A member's POST/PUT/DELETE on a page image was 403 "may not upload or delete" (the key check ran before
    routing): whatever the key, a method the path lacks is 405 with Allow. Methods it has keep their 401/403."""
    r = httpx.request(method, f"{keyed_server.url}/api/v1/documents/abc/pages/1", headers=headers)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, OPTIONS" and r.json()["error"], r.text
    r = httpx.delete(f"{keyed_server.url}/api/v1/documents/abc", headers=headers)
    assert r.status_code == {"member": 403, "admin": 404, "no-key": 401}[_kind(headers)], r.text


def _kind(headers: dict[str, str]) -> str:
    return {STUDENT.get("Authorization"): "member", ADMIN.get("Authorization"): "admin"}.get(
        headers.get("Authorization"), "no-key")


def test_an_unknown_path_is_404_with_or_without_a_key(keyed_server):
    for headers in (STUDENT, {}):
        assert httpx.post(f"{keyed_server.url}/api/v1/nothing-here", headers=headers).status_code == 404


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/api/v1/documents", "/api/v1/whoami", "/", "/openapi.json",
                                  "/static/app.js"])
def test_head_is_answered_wherever_get_is(client, path):
    get, head = client.get(path), client.head(path)
    assert get.status_code == head.status_code == 200 and get.content and head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == str(len(get.content))


def test_if_none_match_takes_weak_tags_lists_and_star(client):
    """RFC 9110 13.1.2: If-None-Match compares weakly, may list several tags (in one field or several) or be *."""
    pdf = make_pdf(["Conditional requests: an ETag names the bytes of a page image, and If-None-Match asks\n"
                    "whether the copy a client keeps is still current, so the server can answer 304 without a body."])
    up = client.post("/api/v1/documents", files=[("files", ("etag-check.pdf", pdf))])
    assert up.status_code == 200, up.text
    url = f"/api/v1/documents/{up.json()['files'][0]['document_id']}/pages/1"
    first = client.get(url)
    etag = first.headers["etag"]
    assert first.status_code == 200 and etag.startswith('"') and first.content
    head = client.head(url)
    assert head.status_code == 200 and head.headers["etag"] == etag and head.content == b""
    for header in (etag, f"W/{etag}", f'"other", {etag}', f'W/"other",W/{etag}', "*", f'"a,b", {etag},'):
        r = client.get(url, headers={"If-None-Match": header})
        assert r.status_code == 304 and r.headers["etag"] == etag and not r.content, header
    r = client.get(url, headers=[("If-None-Match", '"other"'), ("If-None-Match", f"W/{etag}")])
    assert r.status_code == 304
    for header in ('"other"', f'"other" {etag}', etag.strip('"'), f'w/{etag}', ""):
        r = client.get(url, headers={"If-None-Match": header})
        assert r.status_code == 200 and r.content == first.content, header


def test_head_keeps_the_key_rules(keyed_server):
    assert httpx.head(f"{keyed_server.url}/api/v1/documents").status_code == 401
    assert httpx.head(f"{keyed_server.url}/api/v1/documents", headers=STUDENT).status_code == 200


# 10. CORS

def test_cors_preflight_allows_the_configured_origin_with_authorization(client):
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    r = client.options("/api/v1/ask", headers=preflight)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    r = client.post("/api/v1/search", json={"query": "attention"}, headers={"Origin": ORIGIN})
    assert r.headers["access-control-allow-origin"] == ORIGIN
    other = client.options("/api/v1/ask", headers={**preflight, "Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in other.headers


def test_cors_is_off_by_default(keyed_server):
    r = httpx.options(f"{keyed_server.url}/api/v1/ask",
                      headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers
