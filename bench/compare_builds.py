"""Operation times of two builds of hyprvdb, measured in the same run: is either slower?

Runs ``bench/ops.py`` (4096 x 4096 adapter, 1M writes / reads / accumulations, 100k removals,
export, save and load) with each build in turn, alternating, for a number of rounds, and
prints each operation's median time per build and their ratio. A build is a folder that holds
an installed ``hyprvdb`` package (``pip install --target FOLDER .``); each run uses
``python -S`` with PYTHONPATH = that folder + this interpreter's site-packages, so that no
editable install of either build can take its place.

Make a baseline from a git revision:

    git worktree add /tmp/base REV && pip install --no-build-isolation --no-deps \\
        --target /tmp/base-site /tmp/base
    pip install --no-build-isolation --no-deps --target /tmp/new-site .

Run:  python bench/compare_builds.py --baseline /tmp/base-site --current /tmp/new-site
      [--rounds 3] [--repeats 3] [--demo-rounds 4] [--json PATH]

``--demo-rounds N`` also runs ``hyprvdb demo`` N times with each build, alternating which goes
first, timing each call of ``AdaptiveEncoder.adapt`` (one online step: forward, loss, sparse
update, commit, swap) and comparing the medians of the runs' median step times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
LIMIT = 1.10    # the current build may be at most 10% slower per operation

# operation -> path of its timing in ops.py's JSON
OPS = {
    "batch_update (1M)": ("update", "hyprvdb"),
    "get_weights (1M)": ("get", "hyprvdb"),
    "add_weights (1M)": ("more", "add_weights"),
    "remove_weights (100k)": ("more", "remove_weights"),
    "active_weights (970k)": ("more", "active_weights"),
    "save (970k)": ("io", "hyprvdb", "save"),
    "load (970k)": ("io", "hyprvdb", "load"),
    "save (1%)": ("io", "hyprvdb_one_percent", "save"),
    "load (1%)": ("io", "hyprvdb_one_percent", "load"),
}


def run_ops(site: str, repeats: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="hyprvdb-cmp-") as tmp:
        out = os.path.join(tmp, "ops.json")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([site, sysconfig.get_paths()["purelib"],
                                             sysconfig.get_paths()["platlib"]])
        cmd = [sys.executable, "-S", os.path.join(HERE, "ops.py"), "--repeats", str(repeats),
               "--seed", str(seed), "--json", out]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
        if proc.returncode != 0:
            raise RuntimeError(f"ops.py with {site} failed:\n{proc.stdout}\n{proc.stderr}")
        with open(out) as f:
            return json.load(f)["results"]


_DEMO = """
import json, sys, time
import hyprvdb.serve._encoder as E
adapt, times = E.AdaptiveEncoder.adapt, []
def timed(self, *a, **k):
    t = time.perf_counter()
    out = adapt(self, *a, **k)
    times.append(time.perf_counter() - t)
    return out
E.AdaptiveEncoder.adapt = timed
from hyprvdb.serve._demo import run
run()
print("STEP_SECONDS " + json.dumps(times))
"""


def run_demo(site: str) -> list[float]:
    """Seconds of each of the demo's adapt steps with this build."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([site, sysconfig.get_paths()["purelib"],
                                         sysconfig.get_paths()["platlib"]])
    proc = subprocess.run([sys.executable, "-S", "-c", _DEMO], capture_output=True, text=True,
                          env=env, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise RuntimeError(f"the demo with {site} failed:\n{proc.stdout}\n{proc.stderr}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("STEP_SECONDS ")][-1]
    return json.loads(line.split(" ", 1)[1])


def pick(res: dict, path: tuple) -> float:
    x = res
    for k in path:
        x = x[k]
    return x["median_s"]


def check_build(site: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([site, sysconfig.get_paths()["purelib"]]))
    code = "import hyprvdb, os; print(os.path.dirname(hyprvdb.__file__))"
    got = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         env=env, cwd=tempfile.gettempdir())
    if got.returncode != 0:
        raise SystemExit(f"no hyprvdb importable from {site!r}:\n{got.stderr}")
    where = got.stdout.strip()
    if not where.startswith(os.path.abspath(site)):
        raise SystemExit(f"{site!r}: hyprvdb was imported from {where!r} instead")
    return where


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, help="folder holding the baseline build")
    ap.add_argument("--current", required=True, help="folder holding the build to check")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each build")
    ap.add_argument("--repeats", type=int, default=3, help="ops.py --repeats")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--demo-rounds", type=int, default=0,
                    help="hyprvdb demo runs per build (0: none)")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    builds = {"baseline": args.baseline, "current": args.current}
    for site in builds.values():
        check_build(site)
    t0 = time.perf_counter()
    runs: dict[str, list[dict]] = {k: [] for k in builds}
    for r in range(args.rounds):
        order = list(builds) if r % 2 == 0 else list(builds)[::-1]
        for name in order:
            print(f"round {r + 1}/{args.rounds}: {name} ...", flush=True)
            runs[name].append(run_ops(builds[name], args.repeats, args.seed))
    demo: dict[str, list[list[float]]] = {k: [] for k in builds}
    for r in range(args.demo_rounds):
        order = list(builds) if r % 2 == 0 else list(builds)[::-1]
        for name in order:
            print(f"demo round {r + 1}/{args.demo_rounds}: {name} ...", flush=True)
            demo[name].append(run_demo(builds[name]))
    rows, table = [], {}
    all_ok = True
    for op, path in OPS.items():
        base = C.median([pick(x, path) for x in runs["baseline"]])
        cur = C.median([pick(x, path) for x in runs["current"]])
        ratio = cur / base
        ok = ratio <= LIMIT
        all_ok &= ok
        table[op] = {"baseline_s": base, "current_s": cur, "ratio": ratio, "ok": ok,
                     "baseline_runs_s": [pick(x, path) for x in runs["baseline"]],
                     "current_runs_s": [pick(x, path) for x in runs["current"]]}
        rows.append([op, C.fmt_time(base), C.fmt_time(cur), f"{ratio:.2f}",
                     f"<= {LIMIT:.2f}", C.verdict(ok)])
    if args.demo_rounds:
        base = C.median([C.median(x) for x in demo["baseline"]])
        cur = C.median([C.median(x) for x in demo["current"]])
        ratio = cur / base
        ok = ratio <= LIMIT
        all_ok &= ok
        table["demo step"] = {"baseline_s": base, "current_s": cur, "ratio": ratio, "ok": ok,
                              "baseline_runs_s": [C.median(x) for x in demo["baseline"]],
                              "current_runs_s": [C.median(x) for x in demo["current"]]}
        rows.append(["hyprvdb demo: one adapt step", C.fmt_time(base), C.fmt_time(cur),
                     f"{ratio:.2f}", f"<= {LIMIT:.2f}", C.verdict(ok)])
    print()
    print(f"bench/ops.py, {args.rounds} alternating runs per build (each op: median of the "
          f"runs' medians); baseline {args.baseline}, current {args.current}")
    C.print_table(["operation", "baseline", "current", "current/baseline", "target",
                   "status"], rows)
    wall = time.perf_counter() - t0
    print(f"wall time {wall:.1f} s")
    ratios = ", ".join(f"{k} {v['ratio']:.2f}" for k, v in table.items())
    summary = (f"summary: current/baseline per operation {ratios}: "
               f"{C.verdict(all_ok)} (<= {LIMIT:.2f} each)")
    if args.json:
        C.write_json(args.json, "compare_builds", {"operations": table, "all_pass": all_ok,
                                                   "wall_s": wall, "summary": summary},
                     config={"baseline": args.baseline, "current": args.current,
                             "rounds": args.rounds, "repeats": args.repeats,
                             "demo_rounds": args.demo_rounds,
                             "seed": args.seed})
        print(f"wrote {args.json}")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
