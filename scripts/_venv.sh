# Sourced by the Quick start scripts: create/update .venv at the repo root and
# install sppnet into it with the given extras.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# These torch/torchvision wheels lie on the development machines' disk; pinning
# them keeps pip from fetching a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install --quiet -e ".${extras}"
