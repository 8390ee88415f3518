#!/usr/bin/env bash
# Build (once) and cache llama.cpp's llama-server from the same llama-cpp-python sdist and the
# same flags as scripts/build_llama_wheel.sh, then print the binary's path on the last line.
#
# ra-lite's remote backend (--remote URL --remote-kind llama.cpp) talks to llama-server; the
# tests start this binary on loopback to check that path against the real thing, and
# benchmarks/vs_llama_server.py measures it. The sdist vendors llama.cpp with its server
# sources; the web UI is left out (the prebuilt one would be downloaded) and so is OpenSSL.
#
#   bash scripts/build_llama_server.sh            portable CPU build (as the wheel)
#   CMAKE_ARGS="-DGGML_CUDA=on" bash scripts/build_llama_server.sh
#
# One more compile of llama.cpp on a fresh machine (about 4-5 minutes on 2 cores); later runs
# print the cached binary at once.
set -euo pipefail
. "$(dirname "$0")/llama_build_flags.sh"
dir="$cache_root/llama-server-$version-$key"

if [ ! -x "$dir/llama-server" ]; then
  fetch_sdist
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "ra-lite: building llama-server from llama-cpp-python $version (one time, ~5 min on 2 cores)" >&2
  echo "ra-lite: CMAKE_ARGS=$flags" >&2
  tar -xzf "$sdist" -C "$work"
  src="$work/llama_cpp_python-$version/vendor/llama.cpp"
  generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  # shellcheck disable=SC2086  # $flags is a list of -D options, split on purpose (as pip does)
  eval cmake -S "$src" -B "$work/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF "$flags" >&2
  cmake --build "$work/build" --target llama-server -j "$(nproc)" >&2
  mkdir -p "$dir.tmp"
  cp "$work/build/bin/llama-server" "$dir.tmp/llama-server"
  printf '%s\n' "$flags" >"$dir.tmp/CMAKE_ARGS"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"   # publish the cache entry only once complete
fi
echo "$dir/llama-server"
