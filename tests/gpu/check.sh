#!/usr/bin/env bash
# The GPU check (tests/gpu/check.py): run from the repository root, with distgan installed, on a
# machine with one or more CUDA GPUs and no internet needed. Prints a table; exit code = failures.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python tests/gpu/check.py --out "${1:-gpu-check.json}"
