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
pip=(.venv/bin/python -m pip -q --disable-pip-version-check)
echo "==> installing Python dependencies"
"${pip[@]}" install "numpy>=1.24" "scipy>=1.10" "pytest>=7" "hypothesis>=6.80" "tqdm>=4.60" \
  "nanobind>=2.0" "scikit-build-core>=0.10" 2>&1 | grep -v "^WARNING: Location" || true
echo "==> building hyprvdb (C++ core against the system OpenVDB)"
"${pip[@]}" install --no-build-isolation -e . 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import hyprvdb._core" || { echo "build failed" >&2; exit 1; }

case "$what" in
  demo) exec .venv/bin/python examples/openvdb_lora_example.py ;;
  test) exec .venv/bin/python -m pytest tests ;;
  build) echo "==> built: .venv/bin/python -c 'import hyprvdb'" ;;
esac
