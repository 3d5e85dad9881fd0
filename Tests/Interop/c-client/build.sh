#!/usr/bin/env bash
# Builds the C interop client: generates protobuf-c code for node.proto into
# OUTDIR and compiles OUTDIR/berth-interop. Nothing is written to the source
# tree.
#
#   Tests/Interop/c-client/build.sh OUTDIR
#
# Needs: protoc-c (protobuf-c-compiler), libprotobuf-c-dev, libnghttp2-dev,
# pkg-config and a C compiler.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
repo_root=$(cd -- "$script_dir/../../.." && pwd -P)
proto_root="$repo_root/proto"

if [[ ! -f "$proto_root/berth/agent/v1/node.proto" ]]; then
    echo "$0: cannot find $proto_root/berth/agent/v1/node.proto" >&2
    exit 1
fi

mkdir -p -- "$1"
out_dir=$(cd -- "$1" && pwd -P)

# Refuse to generate into the source tree itself (the script's directory or
# the proto directory); a build directory elsewhere, even inside the
# repository, is fine.
if [[ "$out_dir" == "$script_dir" || "$out_dir" == "$proto_root" || "$out_dir" == "$proto_root"/* ]]; then
    echo "$0: OUTDIR must not be the source directory" >&2
    exit 1
fi

protoc-c --proto_path="$proto_root" --c_out="$out_dir" berth/agent/v1/node.proto

# Word splitting of pkg-config's output is intended.
# shellcheck disable=SC2207
cflags=($(pkg-config --cflags libprotobuf-c libnghttp2))
# shellcheck disable=SC2207
libs=($(pkg-config --libs libprotobuf-c libnghttp2))

cc -O2 -Wall -Wextra -Werror \
    "${cflags[@]}" \
    -I"$out_dir" \
    -o "$out_dir/berth-interop" \
    "$script_dir/berth-interop.c" \
    "$out_dir/berth/agent/v1/node.pb-c.c" \
    "${libs[@]}"

echo "built $out_dir/berth-interop"
