"""The router's own HAProxy: a master-worker process and the three ways to change it.

- `start(config)`: check the config (`haproxy -c`), then run
  `haproxy -W -db -S <master.sock> -f <cfg> -p <pidfile>` in a session of its own and wait
  until a worker answers.
- `adopt()`: take over the HAProxy an earlier router left serving (it outlives the router on
  purpose: a router restarted with SIGTERM for an upgrade, or killed with -9, costs no
  request), found by its pid file, its command line and its master socket.
- `release()`: let go of HAProxy without stopping it, when the router exits.
- `reload(config)`: check, write, send `reload` to the master CLI (SIGUSR2 if the socket is
  gone), and wait until the master counts one more reload and the new worker answers on the
  runtime API. Listeners pass to the new worker (`expose-fd listeners`): no connection drops.
- `set_servers(changes)`: `set server ... addr/state` on the runtime API, no reload.

The file on disk is always the full rendered config with the current servers in their slots
(`write_config`), so any later reload, or a restart after a crash, matches what runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path

from router.plan import SlotChange, ordered_changes, runtime_commands
from router.runtime_api import (
    ProcTable,
    RuntimeApiError,
    check_set_server_reply,
    parse_info_pid,
    parse_show_proc,
    send_command,
)

log = logging.getLogger("router.haproxy")

READY_TIMEOUT_S = 10.0


class HAProxyError(Exception):
    """HAProxy could not be found or started, or a reload failed; the message says which."""


class ConfigRejected(HAProxyError):
    """`haproxy -c` refused a candidate configuration; nothing was applied."""


def resolve_binary(name: str) -> str:
    """A path to the HAProxy binary: `name` itself if it has a '/', else PATH, else /usr/sbin."""
    if "/" in name:
        if os.access(name, os.X_OK):
            return name
    else:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        if found:
            return found
    raise HAProxyError(f"HAProxy binary {name!r} not found: install haproxy or pass --haproxy-bin")


class HAProxy:
    """One HAProxy master process owned by this router."""

    def __init__(self, *, binary: str, config_path: Path, pid_path: Path,
                 master_socket: Path, admin_socket: Path, stop_timeout_s: float = 5.0) -> None:
        self.binary = binary
        self.config_path = config_path
        self.pid_path = pid_path
        self.master_socket = master_socket
        self.admin_socket = admin_socket
        self.stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None  # a master we started
        self._adopted: int | None = None  # a master an earlier router started
        self.worker_pid: int | None = None

    @property
    def running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._adopted is not None and _alive(self._adopted)

    @property
    def pid(self) -> int | None:
        if not self.running:
            return None
        return self._proc.pid if self._proc is not None else self._adopted

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    async def check(self, config: str) -> None:
        """Raise ConfigRejected unless `haproxy -c` accepts `config`."""
        candidate = self.config_path.with_name(self.config_path.name + ".new")
        _write_atomic(candidate, config)
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary, "-c", "-q", "-f", str(candidate),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await proc.communicate()
        finally:
            candidate.unlink(missing_ok=True)
        if proc.returncode != 0:
            text = output.decode("utf-8", "replace").strip()
            raise ConfigRejected(f"haproxy -c refused the configuration: {text[-2000:]}")

    def write_config(self, config: str) -> None:
        """Replace the config file atomically (no check: use for runtime-only changes)."""
        _write_atomic(self.config_path, config)

    async def start(self, config: str) -> None:
        """Check `config`, write it and start HAProxy; return once its worker answers."""
        if self.running:
            raise HAProxyError("HAProxy is already running")
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        await _stop_stale(self.pid_path, self.config_path)
        for path in (self.master_socket, self.admin_socket, self.pid_path):
            path.unlink(missing_ok=True)
        await self.check(config)
        self.write_config(config)
        argv = [self.binary, "-W", "-db", "-S", f"{self.master_socket},mode,600",
                "-f", str(self.config_path), "-p", str(self.pid_path)]
        # Its own session: a signal to the router's process group (kill -9 of the router, a
        # restart) leaves it serving; the next router adopts it.
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        self._adopted = None
        log.info("started HAProxy master pid %d: %s", self._proc.pid, " ".join(argv))
        try:
            table = await self._wait_master(lambda t: bool(t.workers))
            await self._wait_worker(table.workers[0])
        except HAProxyError:
            await self.stop()
            raise

    async def adopt(self) -> bool:
        """Take over the HAProxy an earlier router left running on this config: True once its
        master and a worker answer. False when there is none (or it does not answer: then it
        is stopped, and `start` makes a new one)."""
        if self.running:
            return True
        pid = _our_haproxy(self.pid_path, self.config_path)
        if pid is None:
            return False
        self._proc, self._adopted = None, pid
        try:
            table = await self._wait_master(lambda t: bool(t.workers), timeout=2.0)
            await self._wait_worker(table.workers[0], timeout=2.0)
        except HAProxyError as exc:
            log.warning("HAProxy pid %d left by an earlier router does not answer (%s); "
                        "starting a new one", pid, exc)
            self._adopted = None
            return False
        log.info("adopted HAProxy master pid %d, left serving by an earlier router", pid)
        return True

    def release(self) -> None:
        """Let go of HAProxy without stopping it: it serves on for the next router."""
        if self.running:
            log.info("leaving HAProxy master pid %s serving for the next router", self.pid)
        self._proc, self._adopted = None, None

    async def reload(self, config: str) -> None:
        """Check and write `config`, then reload seamlessly; raise if it fails (old config kept)."""
        if not self.running:
            raise HAProxyError("HAProxy is not running")
        await self.check(config)
        previous = self.config_path.read_text() if self.config_path.exists() else None
        before = await self._show_proc()
        self.write_config(config)
        try:
            await send_command(self.master_socket, "reload")
        except RuntimeApiError:
            log.warning("master socket unreachable; reloading with SIGUSR2")
            if self.pid is not None:
                os.kill(self.pid, signal.SIGUSR2)
        table = await self._wait_master(lambda t: t.reloads > before.reloads
                                        or t.failed_reloads > before.failed_reloads)
        if table.failed_reloads > before.failed_reloads or not table.workers:
            if previous is not None:
                self.write_config(previous)
            raise HAProxyError("HAProxy reload failed; the previous configuration still serves")
        await self._wait_worker(table.workers[0])

    async def set_servers(self, changes: Iterable[SlotChange]) -> int:
        """Apply slot changes through the runtime API; return how many commands were sent."""
        sent = 0
        for change in ordered_changes(tuple(changes)):
            for command in runtime_commands(change):
                reply = await send_command(self.admin_socket, command)
                check_set_server_reply(command, reply)
                sent += 1
        return sent

    async def wait(self) -> int | None:
        """Wait for the HAProxy master to exit; return its exit code (None for an adopted
        one, whose code goes to its own parent)."""
        while self.running:
            await asyncio.sleep(0.1)
        return self.returncode

    async def stop(self) -> None:
        """Soft-stop HAProxy (finish requests), kill it after the timeout, remove its files."""
        pid = self.pid
        if pid is not None:
            for sig, grace in ((signal.SIGUSR1, self.stop_timeout_s), (signal.SIGTERM, 2.0),
                               (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                try:
                    await asyncio.wait_for(self.wait(), grace)
                    break
                except asyncio.TimeoutError:
                    log.warning("HAProxy did not stop after %s; escalating", sig.name)
            log.info("HAProxy master pid %d exited with code %s", pid, self.returncode)
        self._proc, self._adopted = None, None
        for path in (self.master_socket, self.admin_socket, self.pid_path):
            path.unlink(missing_ok=True)

    async def _show_proc(self) -> ProcTable:
        return parse_show_proc(await send_command(self.master_socket, "show proc"))

    async def _wait_master(self, done, timeout: float = READY_TIMEOUT_S) -> ProcTable:
        """Poll `show proc` until `done(table)`; the socket refuses while the master re-execs."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_error: Exception | None = None
        while loop.time() < deadline:
            if not self.running:
                raise HAProxyError(f"HAProxy exited with code {self.returncode}; see its "
                                   "messages above")
            try:
                table = await self._show_proc()
                if done(table):
                    return table
            except RuntimeApiError as exc:
                last_error = exc
            await asyncio.sleep(0.02)
        raise HAProxyError(f"HAProxy master did not answer in time: {last_error}")

    async def _wait_worker(self, pid: int, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until worker `pid` answers on the runtime API socket."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            with contextlib.suppress(RuntimeApiError, ValueError):
                if parse_info_pid(await send_command(self.admin_socket, "show info")) == pid:
                    self.worker_pid = pid
                    return
            await asyncio.sleep(0.02)
        raise HAProxyError(f"HAProxy worker {pid} did not answer on {self.admin_socket}")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _our_haproxy(pid_path: Path, config_path: Path) -> int | None:
    """The live HAProxy master that runs our config, by its pid file and its command line."""
    try:
        pid = int(pid_path.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    if not cmdline or b"haproxy" not in Path(cmdline[0].decode()).name.encode() \
            or str(config_path).encode() not in cmdline or not _alive(pid):
        return None
    return pid


async def _stop_stale(pid_path: Path, config_path: Path) -> None:
    """Stop an HAProxy left running on our config that could not be adopted."""
    pid = _our_haproxy(pid_path, config_path)
    if pid is None:
        return
    log.warning("stopping HAProxy pid %d left by an earlier router", pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        for _ in range(50):
            if not _alive(pid):
                return
            await asyncio.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
