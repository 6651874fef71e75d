#!/usr/bin/env bash
# Prints the path of the ONNX Runtime shared library that scripts/deps.sh
# installs ($TAILOR_CACHE/onnxruntime/libonnxruntime.so.1, TAILOR_CACHE
# defaulting to $HOME/.cache/tailor). An ONNXRUNTIME_LIB already set wins.
# Exits 1 with a hint when the library is missing.
set -euo pipefail

if [ -n "${ONNXRUNTIME_LIB:-}" ]; then
	printf '%s\n' "$ONNXRUNTIME_LIB"
	exit 0
fi
lib="${TAILOR_CACHE:-${HOME:?HOME is not set}/.cache/tailor}/onnxruntime/libonnxruntime.so.1"
if [ ! -e "$lib" ]; then
	printf 'ort-path: %s not found: run `make deps`\n' "$lib" >&2
	exit 1
fi
printf '%s\n' "$lib"
