#!/usr/bin/env bash
# The one GPU command: every GPU test and GPU benchmark of the project in one call, writing
# logs and JSON into OUTDIR. Made for a short loan of a GPU machine (Python 3.12, CuPy, JAX on
# CUDA, nvcc; no OpenVDB, no model package, no network): about 5 minutes.
#
#   bash bench/gpu.sh OUTDIR
#
# From a session with the device tool:  run(command="bash bench/gpu.sh $OUT/gpu",
#   carry=["build/nanovdb-include"])   (setup.sh copies NanoVDB's headers there: the GPU
#   machines have none, and the gather kernel reads grids through them)
#
# Steps, each with its own time limit and log (OUTDIR/<step>.log), none stopping the others:
#   environment   versions, devices, what is usable
#   build         hyprvdb._cpu without OpenVDB (CPU kernels, history rule, XLA FFI targets)
#                 and hyprvdb._cuda_ffi (the CUDA FFI targets, nvcc) into build/gpu-site,
#                 when the build tools are there; else the checkout's numpy paths
#   tests         the read path's, history's, JAX's and serving's tests with JAX and CuPy on
#                 the GPU (junit XML in OUTDIR/tests.xml)
#   matmul        bench/matmul.py --json OUTDIR/matmul.json (its GPU section)
#   serve         bench/serve.py --random-weights --json OUTDIR/serve.json
#   snapshots     bench/memory.py --snapshots-only: a SetSnapshot's device memory (CuPy's pool)
# On a machine without a usable GPU the tests run and skip their GPU cases with reasons, and
# the two benchmarks are skipped, saying why (CI runs it that way). OUTDIR/summary.txt lists
# every step's outcome; the exit status is that of the tests.
set -uo pipefail
out="${1:?usage: bash bench/gpu.sh OUTDIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$(dirname "$0")/.."
root="$PWD"
py="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && py=.venv/bin/python
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # CuPy and JAX share the GPU
export PYTHONSAFEPATH=1
[ -d build/nanovdb-include/nanovdb ] && export HYPRVDB_NANOVDB_INCLUDE="$root/build/nanovdb-include"
summary="$out/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, record the outcome
  local name="$1" limit="$2"; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  note "$name: exit $rc after $((SECONDS - t0)) s$([ $rc -eq 124 ] && echo " (time limit $limit s)")"
  return $rc
}

# ------------------------------------------------------------------ environment
"$py" - > "$out/environment.txt" 2>&1 <<'EOF'
import importlib, platform, sys
print("python", sys.version.split()[0], platform.machine())
for m in ("numpy", "jax", "jaxlib", "cupy", "scipy", "pytest", "hypothesis", "nanobind"):
    try:
        print(m, importlib.import_module(m).__version__)
    except Exception as exc:  # noqa: BLE001
        print(m, "not importable:", type(exc).__name__, exc)
try:
    import jax
    print("jax backend", jax.default_backend(), [d.device_kind for d in jax.devices()])
except Exception as exc:  # noqa: BLE001
    print("jax devices: none:", exc)
try:
    import cupy
    n = cupy.cuda.runtime.getDeviceCount()
    print("cupy devices", n, [cupy.cuda.runtime.getDeviceProperties(i)["name"].decode()
                              for i in range(n)])
except Exception as exc:  # noqa: BLE001
    print("cupy devices: none:", type(exc).__name__, exc)
EOF
cat "$out/environment.txt"
gpu=$("$py" -c "
try:
    import cupy, jax
    ok = cupy.cuda.runtime.getDeviceCount() > 0 and jax.default_backend() in ('gpu', 'cuda')
except Exception:
    ok = False
print(int(ok))" 2>/dev/null || echo 0)
note "usable GPU (CuPy sees a device and JAX runs on it): $([ "$gpu" = 1 ] && echo yes || echo no)"

# ------------------------------------------------------------------ build
site="$root/build/gpu-site"
if "$py" -c "import hyprvdb._cpu" 2>/dev/null; then
  note "build: skipped, hyprvdb._cpu is importable here already"
elif "$py" -c "import nanobind, scikit_build_core" 2>/dev/null && command -v cmake >/dev/null; then
  rm -rf "$site"
  if step build 300 "$py" -m pip install --no-build-isolation --no-deps --no-index \
      --target "$site" -C build-dir=build/gpu-build -C cmake.define.HYPRVDB_OPENVDB=OFF .; then
    export PYTHONPATH="$site"
  fi
else
  note "build: skipped, no nanobind / scikit-build-core / cmake here (numpy paths on the CPU side)"
fi
[ -z "${PYTHONPATH:-}" ] && export PYTHONPATH="$root"
note "hyprvdb from: $("$py" -c 'import hyprvdb, os; print(os.path.dirname(hyprvdb.__file__))' 2>&1)"

# ------------------------------------------------------------------ tests
# With a GPU: every test of these files (JAX on the GPU changes what the CPU-marked ones run);
# without: the GPU-marked ones, each skipped with its reason (the rest run in the test suite).
xdist=()
"$py" -c "import xdist" 2>/dev/null && xdist=(-n 4)
select=()
[ "$gpu" = 1 ] || select=(-m gpu)
step tests 240 "$py" -m pytest -p no:cacheprovider -q -rs "${xdist[@]}" "${select[@]}" \
  --junitxml="$out/tests.xml" \
  "$root/tests/test_ops.py" "$root/tests/test_jax.py" "$root/tests/test_snapshot.py" \
  "$root/tests/test_merged.py" "$root/tests/test_history_rule.py" \
  "$root/tests/test_kernels_compile.py" "$root/tests/test_readpath_isolation.py" \
  "$root/tests/test_set_snapshot.py" "$root/tests/test_mixed.py"
tests_rc=$?
tail -n 25 "$out/tests.log"

# ------------------------------------------------------------------ benchmarks
if [ "$gpu" = 1 ]; then
  step matmul 240 "$py" bench/matmul.py --json "$out/matmul.json"
  tail -n 3 "$out/matmul.log"
  step serve 240 "$py" bench/serve.py --random-weights --json "$out/serve.json"
  tail -n 3 "$out/serve.log"
  step snapshots 60 "$py" bench/memory.py --snapshots-only --workloads minilm,minilm-0.05% \
    --json "$out/snapshots.json"
  tail -n 2 "$out/snapshots.log"
else
  note "matmul: skipped, no usable GPU (bench/matmul.py measures the GPU kernels here; its CPU section runs in the CPU benchmarks)"
  note "serve: skipped, no usable GPU (bench/serve.py --random-weights measures the GPU targets here; the CPU figures come from bench/serve.py)"
  note "snapshots: skipped, no usable GPU (bench/memory.py measures the grid and file bytes on the CPU)"
fi
cat "$summary"
exit $tests_rc
