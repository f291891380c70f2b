#!/usr/bin/env bash
# Prints the pip option that makes `make setup` install torch's CPU build on Linux, or nothing.
#
# On Linux, PyPI's torch wheel depends on the CUDA libraries (several GB of nvidia-* wheels) that this project
# never uses: its embedding runs on the CPU. PyTorch's CPU wheel index ($TORCH_INDEX, default below; the Dockerfile
# uses the same) serves torch==X.Y.Z+cpu, which pip prefers to PyPI's X.Y.Z (a local version sorts after its public
# one). The index is added only when it answers within 5 seconds: where only PyPI can be reached (these development
# machines, whose pip finds the CPU wheel on disk through its own configuration) it is left out, so pip never
# waits on a host it cannot reach. TORCH_INDEX= (empty) turns this off; macOS and Windows wheels on PyPI are
# CPU-only already.
set -u
url="${TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
[ -n "$url" ] && [ "$(uname -s)" = Linux ] || exit 0
if python3 - "$url" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=5).close()
PY
then
  echo "setup: torch's CPU build from $url" >&2
  echo "--extra-index-url $url"
else
  echo "setup: $url not reachable: torch from the indexes pip is configured with" >&2
fi
