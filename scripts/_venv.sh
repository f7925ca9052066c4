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
# One resolver pass for everything. The torch/torchvision wheels lie on the
# development machines' disk; pinning them keeps pip from fetching a multi-GB
# CUDA build. --no-compile: pip would byte-compile every module of every
# package (all of torch's 2,000-odd files: about a minute on 2 cores); Python
# compiles the ones a command imports instead, once, on first use. That needs
# bytecode writing on, so the scripts turn PYTHONDONTWRITEBYTECODE off for
# themselves and the processes they start (a shell that sets it, as some CI
# images do, would otherwise recompile torch in every process).
unset PYTHONDONTWRITEBYTECODE
.venv/bin/python -m pip install --quiet --no-compile "torch==2.14.1" "torchvision==0.29.1" -e ".${extras}"
