"""Run ``.edgec`` artifacts on lab devices over TVM RPC.

    model = edgec.deploy.remote.load_remote("model.edgec", "rpc://127.0.0.1:9190/arm64-a72")
    outputs = model.run({"input": array})

A device is either a tracker and a key (``rpc://HOST:PORT/KEY``: any free server
registered under KEY) or one server (``rpc-direct://HOST:PORT[/KEY]``). The
library is uploaded and loaded on the device, the Relax VM is created there, and
weights and inputs are sent as remote tensors.

Nothing here may hang: every exchange with the device runs under a deadline
(``timeout`` seconds). TVM's RPC calls block in C++ and cannot be interrupted, so
each runs in a daemon thread that is abandoned, with the session, when the
deadline passes.

Before uploading, the device is asked for ``edgec.device_info`` (registered by
``edgec lab``'s server) and the artifact's architecture and CPU features are
checked against it: code using a missing extension kills the device's session
with SIGILL instead of raising. A stock ``tvm.exec.rpc_server`` has no such
function; there a lost session is explained with the features the code needs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np

from ..errors import ArtifactError, DeviceError, EdgecError, UsageError
from ..runtime import Signature, check_arch, check_features, cut_to_valid_rows
from .artifact import LIBRARY, WEIGHTS, ArtifactFile, open_artifact

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0
"""Seconds allowed for each exchange with the device (connect, upload, one run)."""

DEVICE_INFO = "edgec.device_info"
"""The global function edgec's lab server registers on the device (JSON: machine, features, emulated)."""

CONNECTION_LOST = ("kShutdown", "Socket closed", "Connection reset", "Broken pipe", "connection closed")
"""Texts in TVM's errors when the other end of the RPC socket went away."""

DEVICE_FORMS = "expected rpc://HOST:PORT/KEY (a tracker) or rpc-direct://HOST:PORT (one server)"


@dataclass(frozen=True)
class Device:
    """Where to run: a tracker plus a device key, or one RPC server."""

    scheme: str  # "rpc" (tracker) or "rpc-direct" (one server)
    host: str
    port: int
    key: str = ""

    @property
    def via_tracker(self) -> bool:
        return self.scheme == "rpc"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}" + (f"/{self.key}" if self.key else "")


def parse_device(text: str) -> Device:
    """Parse a ``--device`` string; a malformed one is a UsageError naming what is wrong."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"--device {text}: {exc}; {DEVICE_FORMS}") from None
    if parts.scheme not in ("rpc", "rpc-direct"):
        raise UsageError(f"--device {text}: unknown scheme '{parts.scheme}'; {DEVICE_FORMS}")
    if not parts.hostname or not port:
        raise UsageError(f"--device {text}: missing HOST:PORT; {DEVICE_FORMS}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise UsageError(f"--device {text}: unexpected user, query or fragment; {DEVICE_FORMS}")
    key = parts.path.removeprefix("/")
    if "/" in key or any(c.isspace() for c in key):
        raise UsageError(f"--device {text}: the key '{key}' must be one word without '/' or spaces")
    if parts.scheme == "rpc" and not key:
        raise UsageError(f"--device {text}: a tracker needs a device key, e.g. rpc://{parts.netloc}/arm64-a72")
    return Device(parts.scheme, parts.hostname, port, key)


def tracker_call(sock: socket.socket, message: list):
    """One request/answer with a TVM RPC tracker (length-prefixed JSON, see tvm.rpc.base)."""
    from tvm.rpc import base

    base.sendjson(sock, message)
    return base.recvjson(sock)


def open_tracker(host: str, port: int, timeout: float) -> socket.socket:
    """A connection to a tracker, after its magic handshake; errors say it is unreachable."""
    from tvm.rpc import base

    where = f"tracker {host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise DeviceError(f"{where} is unreachable ({exc.strerror or exc}); is the tracker running?") from None
    try:
        sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        magic = struct.unpack("<i", base.recvall(sock, 4))[0]
    except OSError as exc:
        sock.close()
        raise DeviceError(f"{where} did not answer the RPC handshake ({exc})") from None
    if magic != base.RPC_TRACKER_MAGIC:
        sock.close()
        raise DeviceError(f"{where} is not a TVM RPC tracker")
    return sock


def tracker_summary(host: str, port: int, timeout: float = 10.0) -> dict:
    """The tracker's view: ``{"queue_info": {key: {"free", "pending"}}, "server_info": [...]}``."""
    from tvm.rpc.base import TrackerCode

    with open_tracker(host, port, timeout) as sock:
        try:
            code, summary = tracker_call(sock, [TrackerCode.SUMMARY])
        except OSError as exc:
            raise DeviceError(f"tracker {host}:{port} dropped the connection ({exc})") from None
    if code != TrackerCode.SUCCESS:
        raise DeviceError(f"tracker {host}:{port} refused the summary request (code {code})")
    return summary


def registered_keys(summary: dict) -> dict[str, int]:
    """Device keys with how many servers are registered under each."""
    keys: dict[str, int] = {}
    for server in summary["server_info"]:
        key = server["key"].removeprefix("server:")
        keys[key] = keys.get(key, 0) + 1
    return keys


def request_server(device: Device, timeout: float) -> tuple[str, int, str]:
    """Ask the tracker for a free server under the key: (host, port, match key).

    Waits at most ``timeout`` for a busy device to come free; a key with no server
    registered at all fails at once.
    """
    from tvm.rpc.base import TrackerCode

    deadline = time.monotonic() + timeout
    keys = registered_keys(tracker_summary(device.host, device.port, timeout))
    if device.key not in keys:
        known = ", ".join(f"{k} ({n})" for k, n in sorted(keys.items())) or "none"
        raise DeviceError(
            f"device {device}: no server is registered under key '{device.key}' (registered keys: {known})"
        )
    with open_tracker(device.host, device.port, timeout) as sock:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            code, value = tracker_call(sock, [TrackerCode.REQUEST, device.key, "", 1])
        except TimeoutError:
            raise DeviceError(
                f"device {device}: all {keys[device.key]} server(s) under key '{device.key}' stayed busy "
                f"for {timeout:g} s; try again later or allow a longer timeout"
            ) from None
        except OSError as exc:
            raise DeviceError(f"tracker {device.host}:{device.port} dropped the connection ({exc})") from None
    if code != TrackerCode.SUCCESS:
        raise DeviceError(f"tracker {device.host}:{device.port} refused the request for '{device.key}' (code {code})")
    host, port, matchkey = value
    return host, port, matchkey


def with_deadline(action: Callable, timeout: float, what: str):
    """Run ``action()`` in a daemon thread; raise DeviceError if it has not returned in time.

    TVM releases the GIL in its RPC calls, so the waiting thread keeps the deadline.
    A call that overruns is abandoned: its thread stays blocked until the socket dies.
    """
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = action()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"edgec-rpc {what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise DeviceError(f"{what}: no answer within {timeout:g} s; the device hung or is too slow for this timeout")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def first_line(exc: BaseException) -> str:
    """The useful line of a TVM error: the last one, after the remote traceback, minus the check text."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return re.sub(r"^Check failed: \(.*?\) is false: ", "", lines[-1]) if lines else type(exc).__name__


@dataclass
class Timing:
    """Per-run latencies in seconds: ``runs`` timed on the device, ``first`` from the host (RPC included).

    ``emulated`` timings come from qemu and say nothing about real device speed.
    """

    first: float
    runs: list[float] = field(default_factory=list)
    emulated: bool = False

    @property
    def median(self) -> float:
        return float(np.median(self.runs)) if self.runs else self.first


class RemoteModel(Signature):
    """An artifact loaded on a lab device; same surface as ``edgec.runtime.CompiledModel``."""

    def __init__(self, artifact: ArtifactFile, device: Device, timeout: float = DEFAULT_TIMEOUT):
        super().__init__(artifact)
        self.path = artifact.path
        self.device = device
        self.timeout = timeout
        self.device_info: dict | None = None
        self._broken: str | None = None
        self._session = None  # set once connected; errors before that get no crash hint
        self.emulated = False
        try:
            self._session = self._connect()
            self.device_info = self._call("device query", self._query_device_info)
            self.emulated = bool(self.device_info and self.device_info.get("emulated"))
            if self.device_info:
                where = f"device {device}" + (" (emulated)" if self.emulated else "")
                check_arch(self.path, self.typed.target, self.device_info["machine"], where)
                check_features(self.path, self.typed.target, set(self.device_info["features"]), where)
            self._call("loading the model", lambda: self._load(artifact))
        except BaseException:
            self.close()  # free the device now, not when the traceback is collected
            raise

    def _connect(self):
        from tvm import rpc

        if self.device.via_tracker:
            host, port, key = request_server(self.device, self.timeout)
        else:
            host, port, key = self.device.host, self.device.port, self.device.key
        logger.info("connecting to %s:%d for %s", host, port, self.device)
        return self._call("connect", lambda: rpc.connect(host, port, key))

    def _query_device_info(self) -> dict | None:
        try:
            info = self._session.get_function(DEVICE_INFO)
        except Exception:  # noqa: BLE001 - a stock server simply lacks the function
            logger.info("device %s has no %s; the artifact's CPU features are not checked", self.device, DEVICE_INFO)
            return None
        return json.loads(info())

    def _load(self, artifact: ArtifactFile) -> None:
        import tvm.runtime
        from tvm.runtime import vm

        self._session.upload(bytearray(artifact.read_member(LIBRARY)), target=LIBRARY)
        library = self._session.load_module(LIBRARY)
        self._device = self._session.cpu()
        self._vm = vm.VirtualMachine(library, self._device)
        blob = np.frombuffer(artifact.read_member(WEIGHTS), np.uint8)
        self._weights = [
            tvm.runtime.tensor(blob[w.offset : w.offset + w.nbytes].view(w.dtype).reshape(w.shape), self._device)
            for w in artifact.typed.weights
        ]

    def _call(self, what: str, action: Callable):
        """Run one exchange with the device, turning a dead or silent session into DeviceError."""
        if self._broken:
            raise DeviceError(f"device {self.device}: the session is unusable after a failed {self._broken}")
        try:
            return with_deadline(action, self.timeout, f"device {self.device}: {what}")
        except EdgecError as exc:
            if isinstance(exc, DeviceError):
                self._broken = what
            raise
        except Exception as exc:  # noqa: BLE001 - TVM's RPC errors have no narrower common type
            self._broken = what
            detail = first_line(exc)
            if any(sign in detail for sign in CONNECTION_LOST):
                detail = "the connection was lost (the device's server was killed, crashed or restarted)"
            raise DeviceError(f"device {self.device}: {what} failed: {detail}{self._crash_hint()}") from None

    def _crash_hint(self) -> str:
        """Why a session may die when the device could not be checked beforehand."""
        if self.device_info or self._session is None:
            return ""
        target = self.typed.target
        features = ", ".join(target.features) or "none"
        return (f"; the device may not be {target.triple.split('-')[0]} or may lack CPU features "
                f"({features}) required by target {target.name}")

    def _set_inputs(self, inputs: dict[str, np.ndarray]) -> None:
        import tvm.runtime

        arrays = self.checked_inputs(inputs)

        def send():
            args = [tvm.runtime.tensor(array, self._device) for array in arrays]
            self._vm.set_input("main", *args, *self._weights)

        self._call("sending inputs", send)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on the device. Inputs are checked like a local run's."""
        self._set_inputs(inputs)
        self._call("run", lambda: self._vm.invoke_stateful("main"))
        results = self._call("fetching outputs", self._fetch_outputs)
        named = {spec["name"]: value for spec, value in zip(self.manifest["signature"]["outputs"], results)}
        return cut_to_valid_rows(self.outputs, {spec["name"]: named[spec["name"]] for spec in self.outputs}, named.get)

    def _fetch_outputs(self, index: tuple[int, ...] = ()) -> list[np.ndarray]:
        """The outputs of the last run, tuples flattened in order.

        Not ``VirtualMachine.get_outputs``: its self-referencing closure keeps the VM, and
        so the session and the device, alive until Python's cycle collector runs.
        """
        arity = self._vm.module["get_output_arity"]("main", *index)
        if arity == -1:
            return [self._vm.module["get_output"]("main", *index).numpy()]
        return [array for i in range(arity) for array in self._fetch_outputs((*index, i))]

    def time(self, inputs: dict[str, np.ndarray], repeat: int = 5, number: int = 1) -> Timing:
        """Latency per run: the first run (timed from the host), then ``repeat`` means of ``number`` runs.

        The first run is a cold one only on a freshly loaded model. Steady-state
        runs are timed on the device by TVM's time evaluator (after one warm-up).
        """
        self._set_inputs(inputs)
        start = time.perf_counter()
        self._call("run", lambda: self._vm.invoke_stateful("main"))
        first = time.perf_counter() - start
        result = self._call(
            "timed runs",
            lambda: self._vm.time_evaluator("invoke_stateful", self._device, number=number, repeat=repeat)("main"),
        )
        if self.emulated:
            logger.warning("timings from %s are emulated (qemu): they say nothing about device speed", self.device)
        return Timing(first=first, runs=[float(r) for r in result.results], emulated=self.emulated)

    def close(self) -> None:
        """End the session, which frees the device for the next client.

        The session lives as long as any remote handle does (the device object
        included), so all are dropped.
        """
        self._vm = self._weights = self._device = self._session = None

    def __enter__(self) -> RemoteModel:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def load_remote(
    artifact_path: str | os.PathLike | ArtifactFile, device: Device | str, timeout: float = DEFAULT_TIMEOUT
) -> RemoteModel:
    """Open the artifact (or take one opened, its signature checked), reserve the device,
    upload and load the model there."""
    if isinstance(device, str):
        device = parse_device(device)
    if timeout <= 0:
        raise UsageError(f"--timeout {timeout:g}: must be positive")
    artifact = artifact_path if isinstance(artifact_path, ArtifactFile) else open_artifact(artifact_path)
    if artifact.libraries() != [LIBRARY]:
        raise ArtifactError(f"{artifact.path}: a partitioned artifact ({len(artifact.libraries())} libraries) "
                            "runs here, not on a lab device yet")
    return RemoteModel(artifact, device, timeout)
