#!/usr/bin/env bash
# Create/update .venv, install sppnet, run the demo on generated data.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" ""
exec .venv/bin/sppnet demo "$@"
