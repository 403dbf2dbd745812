"""Run a fuzz target (fuzz/registry.py) for a number of inputs and report inputs/s.

    .venv/bin/python fuzz/run.py --target h264 --inputs 100000 [--engine atheris|random] [--seconds 120]
    .venv/bin/python fuzz/run.py --all --inputs 1000000 --seconds 3600      # every target in turn

Engines: `atheris` (libFuzzer, coverage-guided over the harness's Python; with `--native DIR`, a build of core_ext by
fuzz/build_native.sh, also over the Cython modules' C, under AddressSanitizer) when it is installed, else `random`
(seeded mutations of the corpus, no coverage; what tests/core_ext/test_fuzz_short.py uses). Both start from
the target's seeds (captured camera streams, SDPs, RTSP responses, incident bodies, real tokens).
One input taking over --max-input-s (random engine; libFuzzer: -timeout) is a finding, as is an exception.
A failing input is written to fuzz/crashes/ and the run exits 1; make it a regression test (tests/core_ext).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fuzz.registry import TARGETS  # noqa: E402

CRASHES = ROOT / "fuzz" / "crashes"
MAX_LEN = 64 * 1024
# Spliced in whole by mutate(): text a byte-level mutation rarely spells (non-ASCII digits, which str.isdigit()
# accepts and int() refuses; a number past int()'s 4300-digit limit; separators of the text formats).
INTERESTING: tuple[bytes, ...] = ("²".encode(), "٣".encode(), "\u00a0".encode(), "\ufeff".encode(), b"9" * 4400)
INTERESTING += (b"-1", b"1e999", b"\r\n", b"\r\n\r\n", b":", b";", b"=", b"/", b",", b'"', b"\\u", b"\\ud800")


def mutate(data: bytes, corpus: list[bytes], rng: random.Random) -> bytes:
    """One to four of: flip bits, set bytes, insert or delete a run, repeat a slice, splice another input, insert
    an INTERESTING piece."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            i = rng.randrange(len(buf))
            buf[i] = rng.choice((0, 1, 2, 3, 0x24, 0x7F, 0x80, 0xFF, rng.getrandbits(8)))
        elif op == 2:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 3 and buf:
            del buf[pos : pos + rng.randint(1, 64)]
        elif op == 4 and buf:
            piece = buf[pos : pos + rng.randint(1, 32)]
            buf[pos:pos] = piece * rng.randint(1, 8)
        elif op == 6:
            buf[pos:pos] = rng.choice(INTERESTING)
        else:
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            buf = buf[:pos] + bytearray(other[cut : cut + rng.randint(1, 4096)])
    return bytes(buf[:MAX_LEN])


def save_crash(name: str, data: bytes) -> Path:
    CRASHES.mkdir(exist_ok=True)
    path = CRASHES / f"{name}-{hashlib.sha1(data).hexdigest()[:12]}.bin"
    path.write_bytes(data)
    return path


class SlowInput(AssertionError):
    """One input took longer than the per-input bound (a quadratic or unbounded path)."""


def run_random(
    name: str,
    inputs: int,
    seconds: float,
    seed: int = 0,
    on_crash: Callable[[str, bytes], object] = save_crash,
    max_input_s: float = 2.0,
) -> tuple[int, float]:
    """(inputs run, CPU seconds). Raises the target's exception (or SlowInput) after saving the input."""
    target = TARGETS[name].run
    corpus = TARGETS[name].seeds()
    rng = random.Random(seed)
    start = time.process_time()
    done = 0
    while done < inputs and time.process_time() - start < seconds:
        data = corpus[done] if done < len(corpus) else mutate(rng.choice(corpus), corpus, rng)
        began = time.process_time()
        try:
            target(data)
            took = time.process_time() - began
            if took > max_input_s:
                raise SlowInput(f"one input took {took:.2f} s of CPU (bound {max_input_s} s)")
        except BaseException:
            on_crash(name, data)
            raise
        done += 1
        if done >= len(corpus) and rng.random() < 0.01 and len(corpus) < 256:
            corpus.append(data)  # keep some mutants: deeper inputs without coverage feedback
    return done, time.process_time() - start


def native_env(build: Path) -> dict[str, str]:
    """The environment for a child fuzzing the core_ext built by fuzz/build_native.sh: that build first on the path,
    atheris' ASan + libFuzzer runtime preloaded (the instrumented modules need its symbols)."""
    import atheris

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(build), str(ROOT), env.get("PYTHONPATH", "")])
    env["LD_PRELOAD"] = str(Path(atheris.path()) / "asan_with_fuzzer.so")
    env["ASAN_OPTIONS"] = "detect_leaks=0:allocator_may_return_null=1"  # CPython's own allocations are not ours
    return env


def run_atheris(
    name: str, inputs: int, seconds: float, corpus_dir: Path | None, native: Path | None = None
) -> tuple[int, float, int]:
    """libFuzzer in a child process (it exits the process when done): (inputs run, CPU seconds, exit code)."""
    work = corpus_dir or Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    work.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(TARGETS[name].seeds()):
        (work / f"seed-{i}").write_bytes(data)
    CRASHES.mkdir(exist_ok=True)
    args = [
        f"-runs={inputs}",
        f"-max_total_time={int(seconds)}",
        f"-max_len={MAX_LEN}",
        "-timeout=10",  # one input over 10 s is a finding (a quadratic path)
        "-print_final_stats=1",
        f"-artifact_prefix={CRASHES}/{name}-",
        str(work),
    ]
    start = os.times()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, *args],
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        env=native_env(native) if native else None,
    )
    end = os.times()
    cpu = (end.children_user - start.children_user) + (end.children_system - start.children_system)
    match = re.search(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
    tail = proc.stderr.strip().splitlines()[-40:]
    if proc.returncode != 0:
        print("\n".join(tail), file=sys.stderr)
    status = [line for line in proc.stderr.splitlines() if re.match(r"#\d+\s", line)]
    if status:
        print(f"libFuzzer: {status[-1]}")  # coverage (cov: edges, ft: features) and corpus at the end
    return (int(match.group(1)) if match else 0), cpu, proc.returncode


def atheris_child(name: str, args: list[str]) -> None:
    import atheris

    import core_ext

    print(f"fuzzing the core_ext in {Path(core_ext.__file__).parent}", file=sys.stderr)
    packages = ["fuzz", *TARGETS[name].instrument]
    for module in [m for m in sys.modules if m.split(".")[0] == "fuzz" or m.startswith(TARGETS[name].instrument)]:
        del sys.modules[module]  # imported above uninstrumented: load them again, instrumented
    with atheris.instrument_imports(include=packages):
        import fuzz.registry as instrumented

        for package in TARGETS[name].instrument:  # those a target imports only when it runs
            importlib.import_module(package)

    atheris.Setup([sys.argv[0], *args], instrumented.TARGETS[name].run)
    atheris.Fuzz()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        atheris_child(sys.argv[2], sys.argv[3:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--target", choices=sorted(TARGETS))
    which.add_argument("--all", action="store_true", help="every target in turn, each for --inputs / --seconds")
    ap.add_argument("--inputs", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=120.0, help="stop after this much time")
    ap.add_argument("--engine", choices=["atheris", "random"], default=None)
    ap.add_argument("--corpus", type=Path, default=None, help="atheris: keep the corpus here")
    ap.add_argument("--seed", type=int, default=0, help="random: the mutation seed")
    ap.add_argument("--native", type=Path, default=None, help="atheris: a build from fuzz/build_native.sh")
    ap.add_argument("--max-input-s", type=float, default=2.0, help="random: CPU seconds one input may take")
    args = ap.parse_args()
    engine = args.engine
    if engine is None:
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "random"
    names = sorted(TARGETS) if args.all else [args.target]
    failed = [name for name in names if run_one(name, engine, args)]
    if failed:
        print(f"FAILED: {', '.join(failed)} (inputs in {CRASHES})", file=sys.stderr)
    raise SystemExit(1 if failed else 0)


def run_one(name: str, engine: str, args: argparse.Namespace) -> int:
    """Fuzz one target; prints its line of results and returns the exit code (0: no finding)."""
    if engine == "atheris":
        corpus = args.corpus / name if args.corpus and args.all else args.corpus
        done, cpu, rc = run_atheris(name, args.inputs, args.seconds, corpus, args.native)
    else:
        rc = 0
        try:
            done, cpu = run_random(name, args.inputs, args.seconds, args.seed, max_input_s=args.max_input_s)
        except BaseException as exc:
            print(f"{name}: FAILED: {exc!r} (input saved in {CRASHES})", file=sys.stderr)
            return 1
    rate = done / cpu if cpu else 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"{name} [{engine}]: {done} inputs, {cpu:.1f} s CPU, {rate:.0f} inputs/s, peak RSS {peak} MB, exit {rc}")
    return rc


if __name__ == "__main__":
    main()
