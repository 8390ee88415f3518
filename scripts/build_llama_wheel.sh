#!/usr/bin/env bash
# Build (once) and cache a llama-cpp-python wheel, then print the directory that holds it.
#
# Why this script exists instead of a plain `pip install llama-cpp-python`:
#  * PyPI ships llama-cpp-python as an sdist only, so every install compiles llama.cpp (~10 min
#    on 2 cores).
#  * The default build is native (-march=native). On Sapphire Rapids CPUs with AMX, the AMX
#    matmul path segfaults at the first eval, and a natively built wheel carried to another CPU
#    can die with SIGILL. We therefore default to a *portable* AVX2/FMA/F16C build.
#  * pip's own wheel cache is keyed by the sdist alone, not by CMAKE_ARGS: a wheel built with one
#    set of flags would silently be reused for another. We key our cache by version + flags.
#
# Choose another build with CMAKE_ARGS (used verbatim when set), e.g.
#   CMAKE_ARGS="-DGGML_CUDA=on"   NVIDIA GPUs (needs the CUDA toolkit)
#   CMAKE_ARGS="-DGGML_METAL=on"  macOS Metal (the default on Apple Silicon anyway)
# or RA_LITE_LLAMA_BUILD=native-noamx for the faster native build that keeps AVX-512 but
# switches AMX off (only for wheels that stay on the machine that built them).
# scripts/build_llama_server.sh builds llama.cpp's llama-server from the same source and flags.
set -euo pipefail
. "$(dirname "$0")/llama_build_flags.sh"
dir="$cache_root/llama-cpp-python-$version-$key"

if ! ls "$dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  fetch_sdist
  mkdir -p "$dir.tmp"
  echo "ra-lite: building llama-cpp-python $version (one time, ~10 min on 2 cores)" >&2
  echo "ra-lite: CMAKE_ARGS=$flags" >&2
  CMAKE_ARGS="$flags" python3 -m pip wheel --no-deps --no-cache-dir -w "$dir.tmp" "$sdist" >&2
  printf '%s\n' "$flags" >"$dir.tmp/CMAKE_ARGS"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"   # publish the cache entry only once complete
fi
echo "$dir"
