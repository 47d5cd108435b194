"""Fuzz the compile front end for a set wall time (the hour-long run is done by hand).

    nice -n 19 .venv/bin/python benchmarks/fuzz.py --seconds 3600 --json fuzz.json

Cases come from ``tests/fuzzing.py`` (the same mutations as ``tests/test_fuzz.py``),
each from its own seed, so any finding is replayed with ``--replay SEED``. One worker
process runs them in order under a 4 GiB address-space limit and reports each case;
this process watches it: an exit by signal is a crash, no report within ``--timeout``
seconds a hang (the worker is killed), and either way a fresh worker continues with the
next seed. Prints and writes the figures: cases, refused, imported, internal errors by
signature, crashes, hangs, with the seeds.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import selectors
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import click  # noqa: E402


def run_worker(start: int) -> None:
    """Run cases from seed ``start`` on, one line per case on stdout: ``SEED ok|internal SIGNATURE``."""
    import numpy as np

    from tests.fuzzing import RandomChooser, front_end, make_case

    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    seed = start
    while True:
        print(f"{seed} start", flush=True)
        error = front_end(make_case(RandomChooser(np.random.default_rng(seed))))
        print(f"{seed} ok" if error is None else f"{seed} internal {error.splitlines()[0]}", flush=True)
        seed += 1


def spawn(start: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--worker", str(start)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=ROOT)


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@click.command()
@click.option("--seconds", default=3600.0, show_default=True, help="Wall time to fuzz for.")
@click.option("--start-seed", default=0, show_default=True)
@click.option("--timeout", "case_timeout", default=60.0, show_default=True, help="A case running longer is a hang.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the figures here.")
@click.option("--worker", type=int, hidden=True)
@click.option("--replay", type=int, help="Run one seed in this process and print its traceback, if any.")
def main(seconds: float, start_seed: int, case_timeout: float, json_path: Path | None, worker: int | None,
         replay: int | None) -> None:
    if worker is not None:
        run_worker(worker)
        return
    if replay is not None:
        import numpy as np

        from tests.fuzzing import RandomChooser, front_end, make_case

        click.echo(front_end(make_case(RandomChooser(np.random.default_rng(replay)))) or f"seed {replay}: no finding")
        return
    started = time.monotonic()
    deadline = started + seconds
    cases, internal, crashes, hangs = 0, Counter(), [], []
    first_seed: dict[str, int] = {}
    seed = start_seed
    process = spawn(seed)
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    current, last_report = None, time.monotonic()
    while time.monotonic() < deadline:
        if not selector.select(timeout=1.0):
            if current is not None and time.monotonic() - last_report > case_timeout:
                hangs.append(current)
            elif process.poll() is None:
                continue
            elif current is None:
                raise SystemExit(f"fuzz worker exited between cases with code {process.returncode}")
            else:  # died mid-case
                crashes.append({"seed": current, "returncode": process.returncode})
        else:
            line = process.stdout.readline()
            if line:
                last_report = time.monotonic()
                number, status, *rest = line.rstrip("\n").split(" ", 2)
                if status == "start":
                    current = int(number)
                    continue
                cases += 1
                current = None
                if status == "internal":
                    internal[rest[0]] += 1
                    first_seed.setdefault(rest[0], int(number))
                continue
            process.wait()
            if current is None:
                raise SystemExit(f"fuzz worker exited between cases with code {process.returncode}")
            crashes.append({"seed": current, "returncode": process.returncode})
        # a hang or a crash: count the case, restart after it
        process.kill()
        process.wait()
        selector.unregister(process.stdout)
        cases += 1
        seed = current + 1
        current = None
        process = spawn(seed)
        selector.register(process.stdout, selectors.EVENT_READ)
        last_report = time.monotonic()
    process.kill()
    process.wait()
    figures = {
        "seconds": round(time.monotonic() - started, 1),
        "cases": cases,
        "internal_errors": sum(internal.values()),
        "internal_signatures": [{"signature": s, "count": n, "first_seed": first_seed[s]} for s, n in internal.most_common()],
        "crashes": crashes,
        "hangs": hangs,
        "start_seed": start_seed,
        "case_timeout_s": case_timeout,
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "pid": os.getpid(),
    }
    text = json.dumps(figures, indent=2)
    click.echo(text)
    if json_path:
        json_path.write_text(text + "\n")


if __name__ == "__main__":
    main()
