# Sourced by build_llama_wheel.sh and build_llama_server.sh: the llama.cpp version, build flags,
# cache directory and cache key they share, so the wheel and the llama-server binary are always
# built from the same source with the same flags (and cached side by side, keyed the same way).
#
# Sets: version, flags, cache_root, key, sdist (the cached source tarball, fetched on first use).
version="${RA_LITE_LLAMA_CPP_VERSION:-0.3.36}"
portable="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF"
noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
if [ -n "${CMAKE_ARGS:-}" ]; then
  flags="$CMAKE_ARGS"
elif [ "${RA_LITE_LLAMA_BUILD:-portable}" = "native-noamx" ]; then
  flags="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF -DCMAKE_C_FLAGS='$noamx' -DCMAKE_CXX_FLAGS='$noamx'"
else
  flags="$portable"
fi
cache_root="${RA_LITE_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ra-lite/wheels}"
key=$(printf '%s\n%s\n%s\n' "$version" "$flags" "$(python3 -c 'import sys;print(sys.version_info[:2])')" | sha256sum | cut -c1-16)

# The llama-cpp-python sdist (it vendors llama.cpp, server sources included), downloaded once.
fetch_sdist() {
  local dir="$cache_root/sdist-$version"
  sdist=$(ls "$dir"/llama_cpp_python-"$version".tar.gz 2>/dev/null || true)
  if [ -z "$sdist" ]; then
    mkdir -p "$dir.tmp"
    python3 -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
      -d "$dir.tmp" "llama-cpp-python==$version" >&2
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    sdist="$dir/llama_cpp_python-$version.tar.gz"
  fi
}
