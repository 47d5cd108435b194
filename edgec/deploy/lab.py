"""An emulated arm64 lab device on this machine: a TVM RPC server under qemu-user.

    state = edgec.deploy.lab.start("arm64-a72")   # state.device == "rpc://127.0.0.1:PORT/arm64-a72"
    model = edgec.deploy.remote.load_remote("model.edgec", state.device)
    edgec.deploy.lab.stop()

Why emulate: it runs cross-compiled artifacts for real (right instructions, right
numbers, the same RPC flow as a lab board) on any x86-64 machine. qemu's
``-cpu cortex-a72`` refuses instructions an A72 lacks, so a wrong target shows up.
It says nothing about speed: remote timings from it are labelled emulated.

What ``start`` builds, cached under ``$EDGEC_LAB_DIR`` (default ``~/.cache/edgec/lab``):
- a Debian bookworm arm64 sysroot with Python 3.11, from debootstrap's first stage
  plus the listed packages unpacked on the host (nothing runs emulated);
- aarch64 wheels of apache-tvm and apache-tvm-ffi at the host's versions, numpy,
  psutil and cloudpickle, installed into a site-packages directory by the host's pip;
- a copy of the ``edgec`` package, for the device-side server (:func:`serve`).

Then it starts an RPC tracker on 127.0.0.1 (unless one is given) and the emulated
server registered with it. Every process gets its own process group; the state
file records their pids so ``stop`` kills only those.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import DeviceError, UsageError

logger = logging.getLogger(__name__)

LAB_CPUS = {"arm64-a72": "cortex-a72", "arm64-a53": "cortex-a53", "arm64-a76": "cortex-a76"}
"""Targets the lab emulates, with qemu's ``-cpu`` model for each."""

SUITE = "bookworm"
PYTHON = "python3.11"
APT_PACKAGES = ("qemu-user-static", "debootstrap")
DEVICE_WHEELS = ("numpy", "psutil", "cloudpickle", "ml_dtypes", "typing_extensions")
PIP_TARGET = [
    "--platform", "manylinux_2_28_aarch64", "--platform", "manylinux_2_17_aarch64",
    "--platform", "manylinux2014_aarch64", "--only-binary=:all:", "--python-version", "3.11",
    "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none",
]
STATE_FILE = "state.json"
START_TIMEOUT = 120.0
"""Seconds for the emulated server to import TVM and register (about 10 s on 2 cores)."""


@dataclass
class LabServer:
    """One emulated device: its RPC server's process group leader and registration."""

    target: str
    cpu: str
    key: str
    port: int
    pid: int
    started: float  # the process's start time, so a reused pid is never killed
    log: str


@dataclass
class LabState:
    """What ``start`` left running; saved as ``state.json`` in the lab directory."""

    dir: str
    tracker_host: str
    tracker_port: int
    tracker_pid: int | None  # None when the tracker was given, not started by the lab
    tracker_started: float | None
    servers: list[LabServer] = field(default_factory=list)
    qemu: str = ""
    sysroot: str = ""
    python_path: list[str] = field(default_factory=list)  # the device's site-packages and edgec

    @property
    def device(self) -> str:
        """The ``--device`` string of the most recently started server."""
        return self.device_for(self.servers[-1])

    def device_for(self, server: LabServer) -> str:
        return f"rpc://{self.tracker_host}:{self.tracker_port}/{server.key}"


def lab_dir() -> Path:
    return Path(os.environ.get("EDGEC_LAB_DIR") or Path.home() / ".cache" / "edgec" / "lab")


def start(target: str = "arm64-a72", tracker: str | None = None, key: str | None = None,
          servers: int = 1) -> LabState:
    """Start emulated devices for ``target`` and return the lab's state (``.device`` to use them).

    ``tracker`` is ``HOST:PORT`` of a running tracker to register with; by default the
    lab starts its own on 127.0.0.1. ``key`` defaults to the target name. ``servers``
    devices serve under that key, as a board farm does: the tracker hands each session to
    a free one, so tuning measures on all of them at once. Devices already running count.
    """
    if target not in LAB_CPUS:
        raise UsageError(f"lab target {target}: not emulated (lab targets: {', '.join(LAB_CPUS)})")
    if servers < 1:
        raise UsageError(f"--servers {servers}: at least one device is needed")
    key = key or target
    root = lab_dir()
    root.mkdir(parents=True, exist_ok=True)
    state = load_state(root)
    if state and not tracker_alive(state):
        logger.info("the lab's previous tracker is gone; starting afresh")
        stop()
        state = None
    if state and tracker and tracker != f"{state.tracker_host}:{state.tracker_port}":
        raise DeviceError(f"the lab in {root} already uses tracker {state.tracker_host}:{state.tracker_port}; "
                          "run 'edgec lab stop' first")
    if state:
        from .remote import tracker_summary

        registered = registered_ports(tracker_summary(state.tracker_host, state.tracker_port), key)
        serving = 0
        for server in state.servers:
            if server.key == key and process_alive(server.pid, server.started):
                if server.target != target:
                    raise DeviceError(f"lab key '{key}' is already used by a {server.target} device")
                if server.port in registered:
                    serving += 1
                    continue
                # Alive but unregistered: TVM's server stops listening after a session dies abnormally.
                logger.info("lab device '%s' on port %d stopped serving; restarting it", key, server.port)
                kill_group(server.pid, server.started)
        state.servers = [s for s in state.servers if process_alive(s.pid, s.started)]
        if serving >= servers:
            return state
    else:
        serving = 0

    if tracker is None and importlib_missing("tornado"):
        raise DeviceError("the lab's RPC tracker needs the Python package tornado: pip install tornado")
    device = prepare()
    if state is None:
        state = start_tracker(root, tracker)
    state.qemu, state.sysroot = device.qemu, str(device.sysroot)
    state.python_path = [str(device.site), str(device.edgec_path)]
    save_state(root, state)
    for _ in range(servers - serving):
        server = start_server(root, state, target, key)
        state.servers.append(server)
        save_state(root, state)
        logger.info("lab device %s (%s under qemu, port %d) is up", state.device_for(server), LAB_CPUS[target],
                    server.port)
    return state


@dataclass
class LabDevice:
    """The emulated device's parts, without its processes: qemu, the arm64 sysroot, the
    aarch64 TVM wheels' site-packages and this edgec's Python package."""

    root: Path
    qemu: str
    sysroot: Path
    site: Path
    edgec_path: Path

    def python_command(self, target: str) -> tuple[list[str], dict[str, str]]:
        """The command and environment that run Python on the emulated ``target`` CPU."""
        return emulated_python(self.qemu, self.sysroot, [str(self.site), str(self.edgec_path)], self.root, target)


def prepare() -> LabDevice:
    """Build what the emulated device needs (once; cached in the lab directory) and start nothing.

    ``start`` runs its server on it; a native aarch64 program (the C runtime API's test)
    runs under ``qemu -L sysroot`` against ``site``'s TVM libraries."""
    root = lab_dir()
    root.mkdir(parents=True, exist_ok=True)
    sysroot = root / f"sysroot-{SUITE}-arm64"
    built = (sysroot / ".complete").exists()
    tools = ensure_tools(["qemu-aarch64-static"] if built else ["qemu-aarch64-static", "debootstrap", "dpkg-deb"])
    if not built:
        build_sysroot(sysroot, tools)
    return LabDevice(root, tools["qemu-aarch64-static"], sysroot, ensure_site_packages(root), copy_edgec(root))


def status() -> dict:
    """The lab's processes, whether each is alive and whether each device is registered."""
    root = lab_dir()
    state = load_state(root)
    if state is None:
        return {"running": False, "dir": str(root), "servers": []}
    summary: dict = {"server_info": []}
    tracker_up = tracker_alive(state)
    if tracker_up:
        from .remote import tracker_summary

        try:
            summary = tracker_summary(state.tracker_host, state.tracker_port, timeout=5.0)
        except DeviceError:
            tracker_up = False
    servers = [
        {**asdict(s), "device": state.device_for(s), "alive": process_alive(s.pid, s.started),
         "registered": s.port in registered_ports(summary, s.key), "emulated": True}
        for s in state.servers
    ]
    return {
        "running": tracker_up and any(s["alive"] for s in servers),
        "dir": str(root),
        "tracker": {"address": f"{state.tracker_host}:{state.tracker_port}", "pid": state.tracker_pid,
                    "started_by_lab": state.tracker_pid is not None, "alive": tracker_up},
        "servers": servers,
    }


def stop() -> list[int]:
    """Stop the servers and the tracker the lab started (each by its process group); return their pids."""
    root = lab_dir()
    state = load_state(root)
    stopped = []
    if state:
        for server in state.servers:
            if kill_group(server.pid, server.started):
                stopped.append(server.pid)
        if state.tracker_pid and kill_group(state.tracker_pid, state.tracker_started):
            stopped.append(state.tracker_pid)
    (root / STATE_FILE).unlink(missing_ok=True)
    return stopped


# --- the build: tools, sysroot, wheels ---------------------------------------------------------


def importlib_missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def find_tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


TOOL_PACKAGES = {"qemu-aarch64-static": "qemu-user-static", "debootstrap": "debootstrap", "dpkg-deb": "dpkg"}


def ensure_tools(tools: list[str]) -> dict[str, str]:
    """Find the host tools the lab needs; apt-get installs missing ones when running as root."""
    names = {tool: TOOL_PACKAGES[tool] for tool in tools}
    missing = [tool for tool in names if not find_tool(tool)]
    if missing and os.geteuid() == 0 and find_tool("apt-get"):
        packages = sorted({names[tool] for tool in missing})
        logger.info("installing %s", " ".join(packages))
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True)
            done = subprocess.run(install, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise DeviceError(f"apt-get install {' '.join(packages)} failed: {tail(done.stderr)}")
        missing = [tool for tool in names if not find_tool(tool)]
    if missing:
        packages = " ".join(sorted({names[tool] for tool in missing}))
        raise DeviceError(f"the emulated lab needs {', '.join(missing)}: install the Debian packages "
                          f"({packages}), e.g. sudo apt-get install {packages}")
    return {tool: find_tool(tool) for tool in names}


def tail(text: str, lines: int = 1) -> str:
    kept = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) or "no output"


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (the sysroot comes from the same place)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if words[:1] in (["URIs:"], ["deb"]):
                for uri in words[1:]:
                    if "://" in uri and uri.rstrip("/").endswith("/debian"):
                        return uri
    return "http://deb.debian.org/debian"


def build_sysroot(sysroot: Path, tools: dict[str, str]) -> None:
    """A bookworm arm64 root with Python 3.11, built once: debootstrap stage one, then unpack."""
    root = sysroot.parent
    if os.geteuid() != 0:
        raise DeviceError(f"building the lab's arm64 sysroot ({sysroot}) needs root for debootstrap; "
                          "run 'edgec lab start' once as root")
    building = root / f"sysroot.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    mirror = debian_mirror()
    logger.info("building the arm64 sysroot from %s (about a minute, once)", mirror)
    command = [tools["debootstrap"], "--arch=arm64", "--foreign", "--variant=minbase",
               f"--include={PYTHON},libstdc++6", SUITE, str(building), mirror]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        raise DeviceError(f"debootstrap of the arm64 sysroot from {mirror} failed: {tail(done.stdout + done.stderr)}")
    # Stage one unpacked the required packages; the extras it only downloaded are listed in
    # debootstrap/base. tar keeps the merged-/usr links (/lib -> usr/lib) that dpkg -x replaces.
    debs = dict(line.split() for line in (building / "debootstrap" / "debpaths").read_text().splitlines())
    for package in (building / "debootstrap" / "base").read_text().split():
        deb = building / debs[package].lstrip("/")
        unpack = f'"{tools["dpkg-deb"]}" --fsys-tarfile "{deb}" | tar -x --keep-directory-symlink -C "{building}"'
        done = subprocess.run(["sh", "-c", unpack], capture_output=True, text=True)
        if done.returncode != 0:
            raise DeviceError(f"unpacking {deb.name} into the sysroot failed: {tail(done.stderr)}")
    shutil.rmtree(building / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    (building / ".complete").write_text(mirror + "\n")
    shutil.rmtree(sysroot, ignore_errors=True)
    building.rename(sysroot)


def ensure_site_packages(root: Path) -> Path:
    """aarch64 wheels of the host's TVM version and its runtime needs, installed by the host's pip."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pins = [f"apache-tvm=={version('apache-tvm')}", f"apache-tvm-ffi=={version('apache-tvm-ffi')}"]
    except PackageNotFoundError as exc:
        raise DeviceError(f"the lab installs the host's TVM on the device, but {exc.name} is not installed") from None
    site = root / ("site-" + "-".join(pin.split("==")[1] for pin in pins))
    if (site / ".complete").exists():
        return site
    wheels = root / "wheels"
    logger.info("downloading aarch64 wheels: %s", ", ".join([*pins, *DEVICE_WHEELS]))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    done = subprocess.run([*pip, "download", "--no-deps", "-d", str(wheels), *PIP_TARGET, *pins, *DEVICE_WHEELS],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise DeviceError(f"pip download of the device's aarch64 wheels failed: {tail(done.stderr)}")
    chosen = [wheel for wheel in wheels.glob("*.whl") if wanted_wheel(wheel.name, pins)]
    building = root / f"site.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    done = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(building), *PIP_TARGET,
                           *map(str, chosen)], capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        raise DeviceError(f"pip install of the device's wheels into {building} failed: {tail(done.stderr)}")
    # The device only runs compiled code (TVM_USE_RUNTIME_LIB=1): the 230 MB compiler is dead weight.
    (building / "tvm" / "lib" / "libtvm_compiler.so").unlink(missing_ok=True)
    (building / ".complete").write_text("\n".join(pins) + "\n")
    shutil.rmtree(site, ignore_errors=True)
    building.rename(site)
    return site


def wanted_wheel(filename: str, pins: list[str]) -> bool:
    """Whether a cached wheel is one this lab needs: the pinned TVM versions or a runtime dependency."""
    name, wheel_version = filename.split("-")[:2]
    name = name.lower().replace("_", "-")
    pinned = {pin.split("==")[0]: pin.split("==")[1] for pin in pins}
    if name in pinned:
        return wheel_version == pinned[name]
    return name in {w.replace("_", "-") for w in DEVICE_WHEELS}


def copy_edgec(root: Path) -> Path:
    """This edgec's pure-Python package, for the device's server; refreshed on every start."""
    device_path = root / "device-python"
    shutil.rmtree(device_path, ignore_errors=True)
    shutil.copytree(Path(__file__).parents[1], device_path / "edgec", ignore=shutil.ignore_patterns("__pycache__"))
    return device_path


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_start_time(pid: int) -> float | None:
    """The process's start time in clock ticks since boot, or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else float(fields[19])


def process_alive(pid: int, started: float | None) -> bool:
    if pid in children:
        children[pid].poll()  # reaps our own child if it died
    return started is not None and process_start_time(pid) == started


def kill_group(pid: int, started: float | None) -> bool:
    """SIGTERM, then SIGKILL, the process group led by ``pid``, if ``pid`` is still the lab's process."""
    if not process_alive(pid, started):
        return False
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not process_alive(pid, started):
                return True
            time.sleep(0.05)
    return True


children: dict[int, subprocess.Popen] = {}
"""Processes this Python process started, kept so they are reaped, not left as zombies."""


def spawn(command: list[str], log: Path, env: dict | None = None) -> tuple[int, float]:
    """Start a process in its own process group, output to ``log``; return (pid, start time)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    children[proc.pid] = proc
    return proc.pid, process_start_time(proc.pid)


def tracker_alive(state: LabState) -> bool:
    if state.tracker_pid is not None and not process_alive(state.tracker_pid, state.tracker_started):
        return False
    try:
        with socket.create_connection((state.tracker_host, state.tracker_port), timeout=2.0):
            return True
    except OSError:
        return False


def start_tracker(root: Path, tracker: str | None) -> LabState:
    """Use the given tracker, or start one on 127.0.0.1 and wait until it answers."""
    from .remote import tracker_summary

    if tracker:
        host, sep, port = tracker.rpartition(":")
        if not sep or not port.isdigit():
            raise UsageError(f"--tracker {tracker}: expected HOST:PORT")
        tracker_summary(host, int(port), timeout=10.0)  # unreachable -> DeviceError naming it
        return LabState(str(root), host, int(port), None, None)
    port = free_port()
    log = root / "logs" / "tracker.log"
    pid, started = spawn([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                          "--port", str(port), "--port-end", str(port + 1)], log)
    state = LabState(str(root), "127.0.0.1", port, pid, started)
    deadline = time.monotonic() + 60.0
    while True:
        try:
            tracker_summary("127.0.0.1", port, timeout=5.0)
            return state
        except DeviceError:
            if not process_alive(pid, started) or time.monotonic() > deadline:
                kill_group(pid, started)
                raise DeviceError(f"the lab's RPC tracker did not start: {tail(log.read_text(errors='replace'))} "
                                  f"(log: {log})") from None
            time.sleep(0.2)


def device_python(state: LabState, target: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run Python on the emulated ``target`` CPU.

    For the lab's server, and for checking native aarch64 behaviour (``edgec.runtime``
    run on the device itself) from the host.
    """
    return emulated_python(state.qemu, Path(state.sysroot), state.python_path, Path(state.dir), target)


def emulated_python(qemu: str, sysroot: Path, python_path: list[str], home: Path,
                    target: str) -> tuple[list[str], dict[str, str]]:
    cpu = LAB_CPUS[target]
    command = [qemu, "-cpu", cpu, "-L", str(sysroot), str(sysroot / "usr" / "bin" / PYTHON)]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "PYTHONPATH": os.pathsep.join(python_path),
        "QEMU_LD_PREFIX": str(sysroot),
        "TVM_USE_RUNTIME_LIB": "1",  # import only TVM's runtime: 1.5 s instead of 5-7 s emulated
        "EDGEC_LAB_CPU": cpu,
    }
    return command, env


def start_server(root: Path, state: LabState, target: str, key: str) -> LabServer:
    """Start the emulated RPC server and wait until it is registered with the tracker."""
    from .remote import tracker_summary

    cpu = LAB_CPUS[target]
    command, env = device_python(state, target)
    # Without binfmt_misc the host cannot exec the arm64 python, so TVM's server, which starts
    # its worker from sys.executable, is pointed at this wrapper.
    wrapper = root / "bin" / f"python-{cpu}"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text("#!/bin/sh\nexec " + " ".join(f"'{part}'" for part in command) + ' "$@"\n')
    wrapper.chmod(0o755)
    port = free_port()
    log = root / "logs" / f"server-{key}-{port}.log"
    serve_code = "import sys; from edgec.deploy.lab import serve; serve(sys.argv[1:])"
    pid, started = spawn([str(wrapper), "-c", serve_code, "--tracker", f"{state.tracker_host}:{state.tracker_port}",
                          "--key", key, "--port", str(port), "--python", str(wrapper)], log, env)
    server = LabServer(target, cpu, key, port, pid, started, str(log))
    deadline = time.monotonic() + START_TIMEOUT
    while port not in registered_ports(tracker_summary(state.tracker_host, state.tracker_port, timeout=5.0), key):
        if not process_alive(pid, started) or time.monotonic() > deadline:
            kill_group(pid, started)
            raise DeviceError(f"the emulated {target} server did not register with the tracker: "
                              f"{tail(Path(log).read_text(errors='replace'))} (log: {log})")
        time.sleep(0.25)
    return server


def registered_ports(summary: dict, key: str) -> set[int]:
    """The ports of the servers registered under ``key`` in a tracker summary."""
    return {int(server["addr"][1]) for server in summary["server_info"]
            if server["key"].removeprefix("server:") == key}


def load_state(root: Path) -> LabState | None:
    path = root / STATE_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        data["servers"] = [LabServer(**s) for s in data["servers"]]
        return LabState(**data)
    except (ValueError, TypeError, KeyError) as exc:
        raise DeviceError(f"{path}: unreadable lab state ({exc}); delete it, stop leftover processes by hand") from None


def save_state(root: Path, state: LabState) -> None:
    path = root / STATE_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(state), indent=2) + "\n")
    temporary.replace(path)


# --- the device side: runs under qemu ------------------------------------------------------------


def device_info() -> dict:
    """What a client checks before uploading: architecture, HWCAP features, emulation."""
    from ..host import hwcap_features

    return {
        "machine": platform.machine(),
        "features": sorted(hwcap_features()),
        "emulated": bool(os.environ.get("EDGEC_LAB_CPU")),
        "cpu": os.environ.get("EDGEC_LAB_CPU", ""),
    }


def register_device_info() -> None:
    """Runs in TVM's server worker; RPC sessions forked from it inherit the function."""
    import tvm_ffi

    tvm_ffi.register_global_func("edgec.device_info", lambda: json.dumps(device_info()), override=True)


def serve(argv: list[str]) -> None:
    """The device's RPC server: TVM's, plus ``edgec.device_info``. Runs emulated, loopback only."""
    import argparse

    parser = argparse.ArgumentParser(prog="edgec.deploy.lab.serve")
    parser.add_argument("--tracker", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--python", required=True, help="host-runnable wrapper that starts this emulated python")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    sys.executable = args.python

    from tvm import rpc

    host, port = args.tracker.rsplit(":", 1)
    server = rpc.Server("127.0.0.1", port=args.port, port_end=args.port + 1, tracker_addr=(host, int(port)),
                        key=args.key, server_init_callback=register_device_info)
    server.proc.join()
