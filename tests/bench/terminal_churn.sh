#!/bin/sh
# terminal_churn.sh — the full terminal churn (issue 19's goal: no stall in
# 10,000 open/exchange/close cycles): tests/integration/test_terminal_churn.py
# with 5,000 cycles per client (two clients), against the built binaries.
#
#   tests/bench/terminal_churn.sh [cycles per client]
#
# Prints the cycles and their time; fails on any lost cycle, restart, open
# terminal left, or an unclean stop.
set -eu
cd "$(dirname "$0")/../.."
MAGNETAR_CHURN_CYCLES=${1:-5000} MAGNETAR_BUILD=${MAGNETAR_BUILD:-$PWD/build} \
	/usr/bin/python3 -m pytest -q -s tests/integration/test_terminal_churn.py
