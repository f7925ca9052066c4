#!/usr/bin/env bash
# Create/update .venv, install sppnet with its test extras, run the whole suite.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" "[test]"
exec .venv/bin/python -m pytest "$@"
