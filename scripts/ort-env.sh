# Sourced by the test and bench scripts: create (or reuse) a virtualenv holding an ONNX Runtime
# wheel and set ORT_LIB to the shared library it ships (onnxruntime/capi/libonnxruntime.so.*).
#   ort_venv DIR REQUIREMENT...
ort_venv() {
  local dir=$1; shift
  if [ ! -x "$dir/bin/python" ]; then
    python3 -m venv "$dir"
  fi
  if ! "$dir/bin/python" -m pip show -q "${1%%==*}" >/dev/null 2>&1 \
     || [ "$("$dir/bin/python" -m pip show "${1%%==*}" 2>/dev/null | sed -n 's/^Version: //p')" != "${1##*==}" ]; then
    "$dir/bin/python" -m pip install -q --disable-pip-version-check "$@"
  fi
  ORT_LIB=$(ls "$dir"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | sort -V | tail -1)
  if [ -z "$ORT_LIB" ]; then
    echo "no libonnxruntime.so.* in $dir" >&2
    return 1
  fi
}
