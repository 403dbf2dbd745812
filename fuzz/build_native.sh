#!/bin/sh
# Builds core_ext with clang's libFuzzer coverage and AddressSanitizer into DIR (default /tmp/goldentime-fuzz-build),
# from a copy of the working tree's sources, so `fuzz/run.py --native DIR` sees coverage inside the Cython modules
# and ASan catches out-of-bounds access there (they are compiled without bounds checks).
set -eu
DIR=${1:-/tmp/goldentime-fuzz-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLANG=${CLANG:-$(command -v clang || command -v clang-14)}
rm -rf "$DIR" && mkdir -p "$DIR/core_ext"
cp "$ROOT"/setup.py "$DIR"/ && cp "$ROOT"/core_ext/*.py "$ROOT"/core_ext/*.pyx "$ROOT"/core_ext/*.pxd "$DIR"/core_ext/
mkdir -p "$DIR/web"  # setup.py lists the console's pages
cd "$DIR"
CC="$CLANG" LDSHARED="$CLANG -shared" CFLAGS="-fsanitize=address,fuzzer-no-link -g" LDFLAGS="-fsanitize=address" \
    "$ROOT/.venv/bin/python" setup.py -q build_ext --inplace >/dev/null
echo "$DIR"
