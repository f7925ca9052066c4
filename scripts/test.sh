#!/usr/bin/env bash
# Create/update .venv, install sppnet with its test extras, run the whole suite
# in two pytest-xdist workers of one torch thread each (tests/conftest.py): on 2
# cores that takes about half the time of one process with two threads, whose
# Python-bound stretches (data generation, subprocess starts, SVM loops) leave a
# core idle. --dist loadgroup: tests marked with one xdist_group share a worker
# (and so their module fixtures); the rest are spread as by default. Extra
# arguments go to pytest (e.g. -n 0 for one process).
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" "[test]"
exec .venv/bin/python -m pytest -n 2 --dist loadgroup "$@"
