#!/usr/bin/env bash
# System packages the test suite uses: Debian's docker-compose (validates docker-compose.yml), Chromium (browser
# tests of the web page), Tesseract with its English model (OCR of image-only pages and slides, tests/test_ocr.py)
# and LibreOffice's Impress and Writer without a GUI (`soffice`: converting decks and documents). Installed only when
# missing, only where apt-get and root are available; the tests that need them skip with a reason otherwise.
set -euo pipefail
want=()
command -v docker-compose >/dev/null 2>&1 || want+=(docker-compose)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
tesseract --list-langs 2>/dev/null | grep -qx eng || want+=(tesseract-ocr tesseract-ocr-eng)  # program + English
command -v soffice >/dev/null 2>&1 || want+=(libreoffice-impress-nogui libreoffice-writer-nogui)
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: cannot install ${want[*]} (need root and apt-get); dependent tests will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || true
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null || \
  echo "system-deps: apt-get install ${want[*]} failed; dependent tests will skip" >&2
