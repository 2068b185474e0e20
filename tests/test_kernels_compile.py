"""Every CUDA kernel compiles, without a GPU: NVRTC (the path CuPy's ``RawModule`` takes),
``nvcc -ptx``, and the shared per-thread ``.cuh`` logic under g++ (the host path the CPU
extension compiles).

NVRTC is called through ctypes exactly as CuPy calls it: ``nvrtcCreateProgram`` on
:func:`hyprvdb.kernels.module_source`, one ``nvrtcAddNameExpression`` per entry of
:data:`hyprvdb.kernels.NAME_EXPRESSIONS`, ``nvrtcCompileProgram`` with
:func:`hyprvdb.kernels.nvrtc_options`, then ``nvrtcGetLoweredName`` for each expression. The
library is found in the pip wheel ``nvidia-cuda-nvrtc`` (``<site-packages>/nvidia/*/lib``) or in
the CUDA toolkit; the NVRTC tests skip only when neither has it.

The g++ test also runs the host build of the 16-bit conversions (``kernels/common.cuh``)
over every float16 and bfloat16 bit pattern and over a large sample of float32 values,
against numpy's float16 and ml_dtypes' bfloat16: the CPU extension's float16/bfloat16
results are only as right as these conversions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hyprvdb.ops import _kernels as K

KERNEL_FILES = sorted(K.NAME_EXPRESSIONS)
# compute_90: PTX for the H100 (what CuPy JIT-compiles there); sm_90: SASS through ptxas,
# which catches resource limits PTX does not; compute_80: Ampere, the oldest bf16 target.
ARCHS = ("compute_90", "sm_90", "compute_80")


# ------------------------------------------------------------------------------ NVRTC
def _nvrtc_candidates() -> list[Path]:
    found: list[Path] = []
    for p in map(Path, sys.path):
        nv = p / "nvidia"
        if nv.is_dir():
            found += sorted(nv.glob("*/lib/libnvrtc.so*"))
    roots = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    for r in filter(None, roots):
        found += sorted(Path(r, "lib64").glob("libnvrtc.so*"))
    system = ctypes.util.find_library("nvrtc")
    if system:
        found.append(Path(system))
    # libnvrtc-builtins is loaded by libnvrtc itself; it is not the API library
    return [f for f in found if "builtins" not in f.name and not f.name.endswith(".alt.so")]


class Nvrtc:
    """The few NVRTC entry points CuPy uses, with their C signatures."""

    def __init__(self, path: Path) -> None:
        self.path = path
        lib = ctypes.CDLL(str(path))
        vp, cp, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
        sig = {
            "nvrtcVersion": [ctypes.POINTER(ctypes.c_int)] * 2,
            "nvrtcCreateProgram": [ctypes.POINTER(vp), cp, cp, ctypes.c_int,
                                   ctypes.POINTER(cp), ctypes.POINTER(cp)],
            "nvrtcAddNameExpression": [vp, cp],
            "nvrtcCompileProgram": [vp, ctypes.c_int, ctypes.POINTER(cp)],
            "nvrtcGetLoweredName": [vp, cp, ctypes.POINTER(cp)],
            "nvrtcGetProgramLogSize": [vp, ctypes.POINTER(sz)],
            "nvrtcGetProgramLog": [vp, ctypes.c_char_p],
            "nvrtcGetPTXSize": [vp, ctypes.POINTER(sz)],
            "nvrtcGetPTX": [vp, ctypes.c_char_p],
            "nvrtcGetCUBINSize": [vp, ctypes.POINTER(sz)],
            "nvrtcGetCUBIN": [vp, ctypes.c_char_p],
            "nvrtcDestroyProgram": [ctypes.POINTER(vp)],
        }
        for name, args in sig.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, ctypes.c_int
        lib.nvrtcGetErrorString.argtypes, lib.nvrtcGetErrorString.restype = [ctypes.c_int], cp
        self.lib = lib

    def version(self) -> tuple[int, int]:
        a, b = ctypes.c_int(), ctypes.c_int()
        self._ok(self.lib.nvrtcVersion(ctypes.byref(a), ctypes.byref(b)), "nvrtcVersion")
        return a.value, b.value

    def _ok(self, rc: int, what: str, log: str = "") -> None:
        if rc != 0:
            msg = self.lib.nvrtcGetErrorString(rc).decode()
            raise AssertionError(f"{what} failed: {msg} ({rc})" + (f"\n--- log ---\n{log}"
                                                                     if log else ""))

    def compile(self, source: str, name: str, expressions: tuple[str, ...],
                options: tuple[str, ...]) -> dict:
        """Compile like CuPy's RawModule; returns the log, lowered names and PTX or CUBIN."""
        lib = self.lib
        prog = ctypes.c_void_p()
        self._ok(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0,
                                        None, None), "nvrtcCreateProgram")
        try:
            for e in expressions:
                self._ok(lib.nvrtcAddNameExpression(prog, e.encode()),
                         f"nvrtcAddNameExpression({e!r})")
            opts = [o.encode() for o in options]
            rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
            n = ctypes.c_size_t()
            self._ok(lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n)), "nvrtcGetProgramLogSize")
            buf = ctypes.create_string_buffer(n.value)
            self._ok(lib.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
            log = buf.value.decode(errors="replace")
            self._ok(rc, f"nvrtcCompileProgram({name}, {' '.join(options)})", log)
            lowered = {}
            for e in expressions:
                p = ctypes.c_char_p()
                self._ok(lib.nvrtcGetLoweredName(prog, e.encode(), ctypes.byref(p)),
                         f"nvrtcGetLoweredName({e!r})")
                lowered[e] = p.value.decode()
            out = {"log": log, "lowered": lowered, "ptx": None, "cubin": None}
            if any(re.search(r"=sm_\d+$", o) for o in options):
                self._ok(lib.nvrtcGetCUBINSize(prog, ctypes.byref(n)), "nvrtcGetCUBINSize")
                blob = ctypes.create_string_buffer(n.value)
                self._ok(lib.nvrtcGetCUBIN(prog, blob), "nvrtcGetCUBIN")
                out["cubin"] = blob.raw
            else:
                self._ok(lib.nvrtcGetPTXSize(prog, ctypes.byref(n)), "nvrtcGetPTXSize")
                blob = ctypes.create_string_buffer(n.value)
                self._ok(lib.nvrtcGetPTX(prog, blob), "nvrtcGetPTX")
                out["ptx"] = blob.value.decode()
            return out
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(prog))


@pytest.fixture(scope="session")
def nvrtc() -> Nvrtc:
    tried = []
    for path in _nvrtc_candidates():
        try:
            return Nvrtc(path)
        except OSError as exc:
            tried.append(f"{path}: {exc}")
    pytest.skip("NVRTC is not installed (no libnvrtc.so in <site-packages>/nvidia/*/lib, "
                "$CUDA_PATH/lib64, /usr/local/cuda/lib64 or the linker path; "
                "`pip install nvidia-cuda-nvrtc`)" + (f"; tried {tried}" if tried else ""))


def ptx_entries(ptx: str) -> list[str]:
    return re.findall(r"^\s*(?:\.visible\s+|\.weak\s+)?\.entry\s+([A-Za-z_$][\w$]*)", ptx, re.M)


def kernel_base(expr: str) -> str:
    return expr.split("<", 1)[0]


# ------------------------------------------------------------------------------ inventory
def test_every_kernel_file_and_kernel_is_listed():
    """A .cu file or a __global__ kernel missing from NAME_EXPRESSIONS would never be compiled
    by CuPy or by these tests."""
    on_disk = sorted(p.name for p in K.KERNEL_DIR.glob("*.cu"))
    assert on_disk == KERNEL_FILES, f"kernels/*.cu {on_disk} != NAME_EXPRESSIONS {KERNEL_FILES}"
    for f in KERNEL_FILES:
        src = (K.KERNEL_DIR / f).read_text()
        globals_ = set(re.findall(r"__global__\s+void\s+(\w+)\s*\(", src))
        listed = {kernel_base(e) for e in K.NAME_EXPRESSIONS[f]}
        assert globals_ == listed, f"{f}: kernels {sorted(globals_)}, listed {sorted(listed)}"
        templated = re.findall(r"template\s*<[^>]*>\s*__global__\s+void\s+(\w+)", src)
        for k in templated:
            types = {e[len(k) + 1:-1] for e in K.NAME_EXPRESSIONS[f] if kernel_base(e) == k}
            assert types == {"float", "__half", "__nv_bfloat16"}, f"{f}: {k} for {types}"


def test_loader_errors_name_the_offender():
    with pytest.raises(ValueError, match=r"unknown kernel file 'nope\.cu'.*gather\.cu"):
        K.module_source("nope.cu")
    with pytest.raises(ValueError, match=r"'matmul\.cu' has no kernel 'delta_matmul<double>'"):
        K.function("matmul.cu", "delta_matmul<double>")


def test_module_source_prepends_defines():
    src = K.module_source("matmul.cu", (("HVDB_NB", 4), ("FOO", "1")))
    first, rest = src.split("\n", 1)
    assert re.fullmatch(r"// headers [0-9a-f]{16}", first)
    assert rest == "#define HVDB_NB 4\n#define FOO 1\n" + (K.KERNEL_DIR / "matmul.cu").read_text()


def test_module_source_changes_with_the_included_headers(tmp_path, monkeypatch):
    # CuPy caches compiled kernels by their source string: an edited header must change it.
    shutil.copytree(K.KERNEL_DIR, tmp_path / "k")
    monkeypatch.setattr(K, "KERNEL_DIR", tmp_path / "k")
    K._headers_digest.cache_clear()
    try:
        before = K.module_source("matmul.cu")
        with open(tmp_path / "k" / "sparse_ops.cuh", "a") as f:
            f.write("// edited\n")
        K._headers_digest.cache_clear()
        assert K.module_source("matmul.cu") != before
    finally:
        K._headers_digest.cache_clear()


# ------------------------------------------------------------------------------ NVRTC tests
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("filename", KERNEL_FILES)
def test_nvrtc_compiles_every_name_expression(nvrtc, filename, arch):
    exprs = K.NAME_EXPRESSIONS[filename]
    res = nvrtc.compile(K.module_source(filename), filename, exprs,
                        K.nvrtc_options(arch=arch, filename=filename))
    lowered = res["lowered"]
    assert set(lowered) == set(exprs)
    for e, name in lowered.items():
        base = kernel_base(e)
        if "<" in e:  # C++ template: an Itanium-mangled name carrying the kernel's name
            assert name.startswith(f"_Z{len(base)}{base}I"), (e, name)
        else:  # extern "C"
            assert name == base, (e, name)
    assert len(set(lowered.values())) == len(exprs), f"two expressions lowered alike: {lowered}"
    if res["ptx"] is not None:
        entries = ptx_entries(res["ptx"])
        assert sorted(entries) == sorted(lowered.values()), \
            f"PTX entries {entries} != lowered names {sorted(lowered.values())}"
    else:
        cubin = res["cubin"]
        assert cubin[:4] == b"\x7fELF", "NVRTC's CUBIN is not an ELF image"
        for name in lowered.values():
            assert name.encode() + b"\0" in cubin, f"{name} is not a symbol of the CUBIN"


@pytest.mark.parametrize("nb", [1, 4, 16])
def test_nvrtc_compiles_with_other_batch_tiles(nvrtc, nb):
    """kernels.function(..., HVDB_NB=n) prepends a #define; the matmul kernels take any tile."""
    src = K.module_source("matmul.cu", (("HVDB_NB", nb),))
    exprs = K.NAME_EXPRESSIONS["matmul.cu"]
    res = nvrtc.compile(src, "matmul.cu", exprs, K.nvrtc_options(arch="compute_90"))
    assert sorted(ptx_entries(res["ptx"])) == sorted(res["lowered"].values())


def test_nvrtc_reports_errors_with_a_log(nvrtc):
    """The harness itself: a broken kernel fails and its log names the error."""
    with pytest.raises(AssertionError, match=r"(?s)nvrtcCompileProgram.*--- log ---.*undefined"):
        broken = "\n__global__ void broken() { undefined_fn(); }\n"
        nvrtc.compile(K.module_source("window.cu") + broken, "window.cu", ("window_rebuild",),
                      K.nvrtc_options(arch="compute_90"))


# ------------------------------------------------------------------------------ nvcc
@pytest.fixture(scope="session")
def nvcc() -> str:
    exe = shutil.which("nvcc")
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if exe is None and root and Path(root, "bin", "nvcc").exists():
            exe = str(Path(root, "bin", "nvcc"))
    if exe is None:
        pytest.skip("nvcc is not installed (CUDA toolkit)")
    return exe


def instantiation_unit(filename: str) -> str:
    """A .cu that includes a kernel file and explicitly instantiates every template kernel of
    it for the types NAME_EXPRESSIONS lists (``template __global__ void k<float>(...);``, the
    parameter list copied from the kernel with its template parameter substituted)."""
    src = (K.KERNEL_DIR / filename).read_text()
    lines = [f'#include "{filename}"', ""]
    for expr in K.NAME_EXPRESSIONS[filename]:
        if "<" not in expr:
            continue  # extern "C": nothing to instantiate
        base, targ = kernel_base(expr), expr[len(kernel_base(expr)) + 1:-1]
        m = re.search(rf"template\s*<\s*typename\s+(\w+)\s*>\s*__global__\s+void\s+{base}"
                      rf"\s*\(([^)]*)\)", src)
        assert m, f"{filename}: no template kernel {base}"
        params = re.sub(rf"\b{m.group(1)}\b", targ, " ".join(m.group(2).split()))
        lines.append(f"template __global__ void {expr}({params});")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("filename", KERNEL_FILES)
def test_nvcc_ptx_instantiates_every_kernel(nvcc, filename, tmp_path, request):
    unit = tmp_path / f"all_{filename}"
    unit.write_text(instantiation_unit(filename))
    ptx = tmp_path / "out.ptx"
    nano = [f"-I{K.nanovdb_include_dir()}"] if filename in K.NANOVDB_FILES else []
    cmd = [nvcc, "-ptx", "-arch=sm_90", "-std=c++17", f"-I{K.KERNEL_DIR}", *nano,
           "--Werror", "all-warnings", str(unit), "-o", str(ptx)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (f"{' '.join(cmd)} failed ({done.returncode}):\n"
                                  f"{done.stderr[-6000:]}\n--- unit ---\n{unit.read_text()}")
    entries = ptx_entries(ptx.read_text())
    exprs = K.NAME_EXPRESSIONS[filename]
    for base in {kernel_base(e) for e in exprs}:
        want = sum(kernel_base(e) == base for e in exprs)
        got = [n for n in entries if n == base or n.startswith(f"_Z{len(base)}{base}I")]
        assert len(got) == want, f"{filename}: {base}: PTX entries {got}, expected {want}"
    assert len(entries) == len(exprs), f"{filename}: entries {entries}"
    # The same kernels, the same symbols, as NVRTC names them (when NVRTC is here too).
    try:
        lib = request.getfixturevalue("nvrtc")
    except pytest.skip.Exception:
        return
    res = lib.compile(K.module_source(filename), filename, exprs,
                      K.nvrtc_options(arch="compute_90", filename=filename))
    assert sorted(entries) == sorted(res["lowered"].values())


# ------------------------------------------------------------------------------ g++ (host)
HOST_UNIT = r"""
// The per-thread functions of kernels/*.cuh built for the host, as the CPU extension builds
// them; main() runs each once on a tiny input and, on request, the 16-bit conversions.
#include "history.cuh"
#include "sparse_ops.cuh"
#ifdef HVDB_WITH_NANOVDB
#include "nanovdb_index.cuh"
#endif

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

template <typename T>
static float row_dot(const T* x) {
    const int indptr[3] = {0, 2, 3}, indices[3] = {0, 2, 1};
    const float data[3] = {2.0f, -1.0f, 4.0f};
    float acc[HVDB_NB] = {0};
    csr_row_dot<T>(indptr, indices, data, x, 3, 1, 0, 0, 1, acc);  // 2 x0 - x2
    float dacc[HVDB_NB] = {0};
    const T W[3] = {x[0], x[1], x[2]};
    dense_row_dot<T>(W, 3, x, 3, 1, 3, 0, 0, 1, dacc);  // |x|^2
    return acc[0] + dacc[0];
}

static int check(bool ok, const char* what) {
    if (!ok) std::fprintf(stderr, "FAILED: %s\n", what);
    return ok ? 0 : 1;
}

int main(int argc, char** argv) {
    if (argc == 4) {  // mode, input file, output file: conversions in bulk
        FILE* in = std::fopen(argv[2], "rb");
        FILE* out = std::fopen(argv[3], "wb");
        if (!in || !out) return 2;
        std::vector<unsigned char> buf;
        unsigned char chunk[65536];
        size_t n;
        while ((n = std::fread(chunk, 1, sizeof chunk, in)) > 0)
            buf.insert(buf.end(), chunk, chunk + n);
        const char* mode = argv[1];
        if (!std::strcmp(mode, "half2f") || !std::strcmp(mode, "bf2f")) {
            for (size_t i = 0; i + 2 <= buf.size(); i += 2) {
                unsigned short b;
                std::memcpy(&b, &buf[i], 2);
                const float f = !std::strcmp(mode, "half2f") ? to_f32(hvdb_half{b})
                                                             : to_f32(hvdb_bf16{b});
                std::fwrite(&f, 4, 1, out);
            }
        } else {
            for (size_t i = 0; i + 4 <= buf.size(); i += 4) {
                float f;
                std::memcpy(&f, &buf[i], 4);
                unsigned short b;
                if (!std::strcmp(mode, "f2half")) { hvdb_half h; from_f32(f, &h); b = h.bits; }
                else { hvdb_bf16 h; from_f32(f, &h); b = h.bits; }
                std::fwrite(&b, 2, 1, out);
            }
        }
        std::fclose(in);
        std::fclose(out);
        return 0;
    }
    int bad = 0;
    const float xf[3] = {1.0f, 2.0f, 3.0f};
    bad += check(row_dot<float>(xf) == 2.0f - 3.0f + 14.0f, "csr_row_dot/dense_row_dot float");
    hvdb_half xh[3];
    hvdb_bf16 xb[3];
    for (int i = 0; i < 3; ++i) { from_f32(xf[i], &xh[i]); from_f32(xf[i], &xb[i]); }
    bad += check(row_dot<hvdb_half>(xh) == 13.0f, "csr_row_dot/dense_row_dot half");
    bad += check(row_dot<hvdb_bf16>(xb) == 13.0f, "csr_row_dot/dense_row_dot bfloat16");
    // csr_row_axpy over a transposed x (k x batch = 3 x 2)
    const int indptr[2] = {0, 2}, indices[2] = {0, 2};
    const float data[2] = {2.0f, -1.0f}, xt[6] = {1, 10, 2, 20, 3, 30};
    float acc[2] = {0, 0};
    csr_row_axpy(indptr, indices, data, xt, 2, 2, 0, acc);
    bad += check(acc[0] == -1.0f && acc[1] == -10.0f, "csr_row_axpy");
    // merge_one in all three dtypes
    float W[4] = {1, 1, 1, 1};
    merge_one<float>(W, 2, 1, 0, 0.5f, -2.0f);
    bad += check(W[2] == 0.0f && W[0] == 1.0f, "merge_one float");
    hvdb_half Wh[1];
    from_f32(1.0f, &Wh[0]);
    merge_one<hvdb_half>(Wh, 1, 0, 0, 0.25f, 2.0f);
    bad += check(to_f32(Wh[0]) == 1.5f, "merge_one half");
    hvdb_bf16 Wb[1];
    from_f32(1.0f, &Wb[0]);
    merge_one<hvdb_bf16>(Wb, 1, 0, 0, 0.25f, 2.0f);
    bad += check(to_f32(Wb[0]) == 1.5f, "merge_one bfloat16");
    // hvdb_value_at: base 1, +2 at t=3, reset to 5 at t=5, +1 at t=8
    const int t[3] = {3, 5, 8};
    const float d[3] = {2, 5, 1};
    const unsigned char reset[3] = {0, 1, 0};
    bad += check(hvdb_value_at(1.0, t, d, reset, 0, 3, 4) == 3.0, "hvdb_value_at, increment");
    bad += check(hvdb_value_at(1.0, t, d, reset, 0, 3, 8) == 6.0, "hvdb_value_at, reset");
    bad += check(hvdb_value_at(1.0, t, d, reset, 0, 3, 2) == 1.0, "hvdb_value_at, before");
    bad += check(!hvdb_changed_by(t, 0, 3, 2) && hvdb_changed_by(t, 0, 3, 3), "hvdb_changed_by");
    bad += check(hvdb_popcount64(0xF0F0ull) == 8, "hvdb_popcount64");
    if (!bad) std::puts("ok");
    return bad;
}
"""


def _cxx() -> str:
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ is not installed")
    return cxx


def _build_host_unit(folder: Path, flags: list[str]) -> tuple[Path, subprocess.CompletedProcess,
                                                             list[str]]:
    src = folder / "host_unit.cpp"
    src.write_text(textwrap.dedent(HOST_UNIT))
    exe = folder / "host_unit"
    nano = K.nanovdb_include_dir()
    if nano:  # NanoVDB's headers, where installed, compile into the unit as into _cpu
        flags = [*flags, "-DHVDB_WITH_NANOVDB", f"-I{nano}"]
    cmd = [_cxx(), "-std=c++17", *flags, "-O2", f"-I{K.KERNEL_DIR}", str(src), "-o", str(exe)]
    return exe, subprocess.run(cmd, capture_output=True, text=True, timeout=300), cmd


def test_cuh_compiles_warning_free_on_the_host(tmp_path):
    """The host path of the shared headers builds with -Wall -Werror (as the design asks)."""
    _, done, cmd = _build_host_unit(tmp_path, ["-Wall", "-Werror"])
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr[-6000:]}"


@pytest.fixture(scope="session")
def host_unit(tmp_path_factory) -> Path:
    """The host unit built with -Wall (warnings shown, not fatal: the strict build has its own
    test above), for the behavioural checks below."""
    exe, done, cmd = _build_host_unit(tmp_path_factory.mktemp("host_unit"), ["-Wall"])
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr[-6000:]}"
    return exe


def test_cuh_functions_run_on_the_host(host_unit):
    done = subprocess.run([str(host_unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def _convert(exe: Path, mode: str, data: np.ndarray, tmp_path: Path, out_dtype) -> np.ndarray:
    src, dst = tmp_path / f"{mode}.in", tmp_path / f"{mode}.out"
    data.tofile(src)
    done = subprocess.run([str(exe), mode, str(src), str(dst)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return np.fromfile(dst, dtype=out_dtype)


def _bf16():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 reference needs ml_dtypes")
    return np.dtype(ml_dtypes.bfloat16)


@pytest.mark.parametrize("kind", ["float16", "bfloat16"])
def test_host_16bit_to_float32_every_pattern(host_unit, tmp_path, kind):
    dt = np.dtype(np.float16) if kind == "float16" else _bf16()
    bits = np.arange(1 << 16, dtype=np.uint16)
    got = _convert(host_unit, "half2f" if kind == "float16" else "bf2f", bits, tmp_path,
                   np.float32)
    want = bits.view(dt).astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    # exact bits (signed zeros and infinities included) wherever the value is a number
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


def _float32_sample(rng: np.random.Generator) -> np.ndarray:
    """Random bit patterns, every exponent, and the ties and edges of both 16-bit formats."""
    rand = rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32)
    ties = []
    for low_bits in (13, 16):  # float16 keeps 10 of 23 mantissa bits, bfloat16 7
        m = rng.integers(0, 1 << (23 - low_bits), 1 << 14, dtype=np.uint32) << low_bits
        e = rng.integers(0, 255, 1 << 14, dtype=np.uint32) << 23
        s = rng.integers(0, 2, 1 << 14, dtype=np.uint32) << 31
        half = np.uint32(1 << (low_bits - 1))
        for off in (half - 1, half, half + 1):  # just below, at and above the halfway point
            ties.append(s | e | m | off)
    # float16 subnormals and the overflow threshold (65520 rounds to inf)
    small = np.linspace(0, 7e-5, 50001, dtype=np.float32).view(np.uint32)
    edges = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65519.99, 65520.0, 65536.0,
                      5.96e-8, 2.98e-8, 2.9802322e-08, 2.9802326e-08, 1e-45, 3.4028235e38,
                      -3.4028235e38], np.float32).view(np.uint32)
    return np.concatenate([rand, *ties, small, small | np.uint32(1 << 31), edges])


@pytest.mark.parametrize("kind", ["float16", "bfloat16"])
def test_host_float32_to_16bit_rounds_to_nearest_even(host_unit, tmp_path, kind):
    dt = np.dtype(np.float16) if kind == "float16" else _bf16()
    x = _float32_sample(np.random.default_rng(7)).view(np.float32)
    got = _convert(host_unit, "f2half" if kind == "float16" else "f2bf", x, tmp_path, np.uint16)
    with np.errstate(over="ignore", invalid="ignore"):
        want = x.astype(dt).view(np.uint16)
    gv, wv = got.view(dt), want.view(dt)
    nan = np.isnan(wv.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(gv.astype(np.float32)), nan)
    bad = np.flatnonzero((got != want) & ~nan)
    assert not len(bad), (f"{len(bad)} of {len(x)} conversions differ from numpy, e.g. " +
                          ", ".join(f"{x[i]!r} ({x.view(np.uint32)[i]:08x}) -> {got[i]:04x}, "
                                    f"expected {want[i]:04x}" for i in bad[:5]))


def test_nvcc_builds_the_cuda_ffi_targets(nvcc, tmp_path):
    """csrc/cuda/jax_ffi.cu (hyprvdb._cuda_ffi: the CUDA XLA FFI targets of hyprvdb.jax,
    built by CMake where nvcc is found) compiles for sm_90 against jaxlib's FFI headers, so
    that a GPU machine's build gets it; no GPU needed."""
    jax_ffi = pytest.importorskip("jax.ffi")
    import sysconfig
    src = Path(__file__).resolve().parents[1] / "csrc" / "cuda" / "jax_ffi.cu"
    r = subprocess.run([nvcc, "-std=c++17", "-c", "-arch=sm_90", "-Xcompiler", "-fPIC",
                        "-diag-suppress", "940,2473", "-I", jax_ffi.include_dir(),
                        "-I", str(K.KERNEL_DIR), "-I", sysconfig.get_paths()["include"],
                        str(src), "-o", str(tmp_path / "jax_ffi.o")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
