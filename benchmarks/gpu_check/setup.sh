#!/usr/bin/env bash
# setup.sh PY WHL SITE: install, from the wheels in WHL, the modules PY cannot import (or whose version is older
# than the project needs) into SITE; the machine's own packages stay as they are. Without a working pip the
# wheels are unpacked into SITE (a wheel is a zip of its site-packages). No WHL folder: report and go on.
PY=$1 WHL=$2 SITE=$3
mkdir -p "$SITE"
NEED=$($PY - <<'PYEOF'
import importlib.metadata as md

# distribution -> the oldest version the project runs with (pyproject.toml; the stubs need grpcio/protobuf)
WANT = {"diffusers": "0.31", "scikit-video": "1.1.11", "grpcio": "1.85.1", "protobuf": "7.35",
        "huggingface-hub": "1.32.0", "safetensors": "0.8.0"}  # the last two: what diffusers 0.42.1 wants


def v(text):
    return tuple(int("".join(c for c in part if c.isdigit()) or 0) for part in text.split("+")[0].split(".")[:3])


need = []
for name, floor in WANT.items():
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    if have is None or v(have) < v(floor):
        need.append(name)
print(" ".join(need))
PYEOF
)
echo "missing or too old here: ${NEED:-nothing}"
[ -n "$NEED" ] || exit 0
if [ ! -d "$WHL" ]; then
  echo "no wheel folder $WHL: carry .whl (benchmarks/gpu_check/fetch_wheels.sh fills it)"; exit 1
fi
files=()
for name in $NEED; do
  pattern=$(echo "$name" | tr '-' '_')
  found=$(ls "$WHL"/${pattern}-*.whl "$WHL"/${name}-*.whl 2>/dev/null | head -1)
  if [ -z "$found" ]; then echo "no wheel for $name in $WHL"; continue; fi
  # grpcio is built per Python: take the one for this interpreter
  if [ "$name" = grpcio ]; then
    tag=$($PY -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    found=$(ls "$WHL"/grpcio-*-"$tag"-*.whl 2>/dev/null | head -1)
    [ -n "$found" ] || { echo "no grpcio wheel for $tag in $WHL"; continue; }
  fi
  files+=("$found")
done
[ ${#files[@]} -gt 0 ] || exit 1
echo "installing: ${files[*]}"
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${files[@]}" \
  || $PY - "$SITE" "${files[@]}" <<'PYEOF'
import sys, zipfile
for wheel in sys.argv[2:]:
    zipfile.ZipFile(wheel).extractall(sys.argv[1])
    print("unpacked", wheel)
PYEOF
PYTHONPATH="$SITE" $PY -c "import diffusers, grpc, google.protobuf; print('diffusers', diffusers.__version__, 'grpc', grpc.__version__, 'protobuf', google.protobuf.__version__)"
