"""Health checks of service instances, run by the agent on the node the instance runs on.

Each check of each service of a group (``services[].checks`` in the job file) gets
one asyncio task per allocation, alive while the check's task is running: it is
started when the task starts (or is re-attached after an agent restart), cancelled
when the task stops or restarts, and cancelled for good when the allocation is
stopped, before its tasks are killed.  Between runs it sleeps for the check's
``interval``; nothing polls, so a thousand idle allocations cost a thousand timers.

- ``http``: ``method path`` on the port's address, without a client library (a
  raw HTTP/1.1 request); passes on ``expected_status``, or any 2xx when unset.
- ``tcp``: passes when a connection opens.
- ``script``: ``command args`` as a subprocess of the agent with the task's
  environment, in the task's directory; passes on exit 0, is killed (its whole
  process group) at ``timeout``.  Script checks run on the host for every driver,
  docker included: inside a container they would need an exec the driver
  interface does not have.

Results (:class:`~podium.models.CheckResult`) are kept on the runner as
``check_results`` (by check name); a change of status marks the runner dirty,
so the next report carries them to the server, which keeps the catalog's
health from them.  With ``on_failure: restart`` a check that failed
``failures_before_restart`` times in a row, not counting failures within
``grace`` of the task's start, asks the state machine to restart the task
(:class:`~podium.agent.allocrunner.RestartRequested`, counted against the
restart policy); the task's events say which check failed and how.

Drivers that keep their own verdict (:meth:`podium.drivers.base.Driver.health`,
Docker's HEALTHCHECK) are polled too, every ``DRIVER_HEALTH_INTERVAL``; their
verdict is reported as a check ``<task>-driver-health`` of no service, which
every service of the allocation must pass to count as healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

from podium.agent.allocrunner import Phase, RestartRequested
from podium.drivers.base import DriverHealth
from podium.models import Check, CheckResult, CheckStatus, Service

if TYPE_CHECKING:
    from podium.agent.runner import AllocRunner

log = logging.getLogger("podium.agent.checks")

OUTPUT_LIMIT = 1024
"""Characters of a check's output kept (and reported)."""
DRIVER_HEALTH_INTERVAL = 5.0
DRIVER_HEALTH_TIMEOUT = 10.0
_READ_LIMIT = 8192
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")
_WILDCARD = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class Outcome:
    passed: bool
    output: str = ""


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= OUTPUT_LIMIT else text[: OUTPUT_LIMIT - 1] + "…"


# --------------------------------------------------------------------------- the checks


async def http_check(
    host: str,
    port: int,
    path: str,
    *,
    method: str = "GET",
    expected_status: int | None = None,
    timeout: float = 2.0,
) -> Outcome:
    """One HTTP/1.1 request; passes on ``expected_status``, or any 2xx when it is None."""
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    what = f"{method} http://{netloc}{path}"
    writer: asyncio.StreamWriter | None = None
    head = rest = b""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: {netloc}\r\nUser-Agent: podium-check\r\n"
                "Accept: */*\r\nConnection: close\r\n\r\n".encode("latin-1")
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n")
            # the rest (headers, the start of the body) only for the output, best effort
            while method.upper() != "HEAD" and len(rest) < _READ_LIMIT:
                chunk = await reader.read(_READ_LIMIT - len(rest))
                if not chunk:
                    break
                rest += chunk
    except TimeoutError:
        if not head:
            return Outcome(False, f"{what}: no answer within {timeout:g}s")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        if not head:
            return Outcome(False, f"{what}: {_os_error(exc)}")
    finally:
        if writer is not None:
            writer.close()
    body = rest.partition(b"\r\n\r\n")[2]
    parts = head.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return Outcome(False, f"{what}: not an HTTP answer: {head[:80]!r}")
    status = int(parts[1])
    passed = status == expected_status if expected_status is not None else 200 <= status < 300
    text = body.decode("utf-8", "replace")
    output = f"{what}: HTTP {status} {parts[2].strip() if len(parts) > 2 else ''}".rstrip()
    return Outcome(passed, _clip(f"{output}\n{text}" if text.strip() else output))


async def tcp_check(host: str, port: int, *, timeout: float = 2.0) -> Outcome:
    """Passes when a TCP connection to ``host:port`` opens."""
    what = f"TCP {host}:{port}"
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return Outcome(False, f"{what}: no connection within {timeout:g}s")
    except OSError as exc:
        return Outcome(False, f"{what}: {_os_error(exc)}")
    writer.close()
    return Outcome(True, f"{what}: connection established")


async def script_check(
    command: str,
    args: list[str],
    *,
    env: dict[str, str],
    cwd: str,
    timeout: float = 2.0,
) -> Outcome:
    """Run ``command args`` (``${VAR}`` from ``env`` expanded); passes on exit status 0."""
    argv = [_expand(command, env), *(_expand(a, env) for a in args)]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd if os.path.isdir(cwd) else None,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return Outcome(False, f"cannot run {argv[0]}: {_os_error(exc)}")
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await proc.wait()
        return Outcome(False, f"{argv[0]}: killed after {timeout:g}s without finishing")
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    text = out.decode("utf-8", "replace")
    code = proc.returncode
    if code == 0:
        return Outcome(True, _clip(text))
    return Outcome(False, _clip(f"exit status {code}\n{text}" if text.strip() else f"exit {code}"))


def _expand(value: str, env: dict[str, str]) -> str:
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), value)


def _os_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()  # asyncio's own strerror adds the address
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------- per allocation


@dataclass(frozen=True)
class _Spec:
    """What a running loop was started for; a different spec restarts the loop."""

    service: str
    check: Check | None
    task: str
    started_at: float | None


class AllocChecks:
    """The check loops of one allocation.  ``update`` after each state change."""

    def __init__(self, runner: AllocRunner) -> None:
        self.runner = runner
        self._loops: dict[str, tuple[_Spec, asyncio.Task[None]]] = {}
        self._stopped = False

    # -- called by the runner
    def update(self) -> None:
        """Start the loops of checks whose task now runs; cancel the others."""
        m = self.runner.machine
        if self._stopped:
            return
        if m.stopping or m.terminal() or self.runner.forgotten:
            self.stop()
            return
        group = m.spec.groups.get(m.alloc.group)
        if group is None:
            return
        wanted: dict[str, _Spec] = {}
        first = next(iter(group.tasks))
        for svc in group.services:
            for check in svc.checks:
                task = check.task or first
                running, started = self._run_start(task)
                if running:
                    wanted[check.name] = _Spec(svc.name, check, task, started)
        for task in m.tasks:
            running, started = self._run_start(task)
            if running and self._driver_keeps_health(task):
                wanted[f"{task}-driver-health"] = _Spec("", None, task, started)
        if not wanted and not self._loops:
            return
        for name in list(self._loops):
            spec, loop = self._loops[name]
            if wanted.get(name) != spec:
                loop.cancel()
                del self._loops[name]
                self._forget(name, spec)
        for name, spec in wanted.items():
            if name in self._loops:
                continue
            if spec.check is not None:
                coro = self._check_loop(spec.check, spec)
            else:
                coro = self._health_loop(name, spec)
            loop = asyncio.get_running_loop().create_task(coro, name=f"check {name}")
            self._loops[name] = (spec, loop)
            loop.add_done_callback(functools.partial(self._done, name))

    def stop(self) -> None:
        """Cancel every loop (the allocation is stopping, or the agent detaches)."""
        self._stopped = True
        for _, loop in self._loops.values():
            loop.cancel()
        self._loops.clear()

    def report(self) -> dict[str, CheckResult] | None:
        """Every check's latest result for the server, or None when there are none."""
        return dict(self.runner.check_results) or None

    @property
    def running(self) -> list[str]:
        return sorted(self._loops)

    # -- helpers
    def _run_start(self, task: str) -> tuple[bool, float | None]:
        """Whether the task is running, and since when."""
        track = self.runner.machine.tasks.get(task)
        if track is None or track.phase != Phase.RUNNING:
            return False, None
        return True, track.state.started_at

    def _driver_keeps_health(self, task: str) -> bool:
        if task not in self.runner.handles:
            return False
        try:
            driver = self.runner.driver_for(task)
        except Exception:
            return False
        return driver.keeps_health()

    def _done(self, name: str, task: asyncio.Task[None]) -> None:
        entry = self._loops.get(name)
        if entry is not None and entry[1] is task:
            del self._loops[name]
        if not task.cancelled() and task.exception() is not None:
            log.error("alloc %s: check %s stopped", self.runner.id, name, exc_info=task.exception())

    def _forget(self, name: str, spec: _Spec) -> None:
        """A check whose loop ended (its task stopped or restarted) no longer vouches for
        anything: back to pending, so neither the catalog nor the deployment's health
        tracker counts a result from before the restart."""
        old = self.runner.check_results.get(name)
        if old is None or old.status == CheckStatus.PENDING:
            return
        self.runner.check_results[name] = CheckResult(
            name=name,
            service=spec.service,
            status=CheckStatus.PENDING,
            output="the task is not running; waiting for it to start again",
            time=self.runner.now(),
        )
        self.runner.host.report(self.runner.id)

    def _record(self, result: CheckResult) -> None:
        old = self.runner.check_results.get(result.name)
        self.runner.check_results[result.name] = result
        if old is None or old.status != result.status:
            self.runner.host.report(self.runner.id)

    # -- the loops
    async def _check_loop(self, check: Check, spec: _Spec) -> None:
        consecutive = 0
        counted = 0
        while True:
            outcome = await self.run_once(check, spec.service, spec.task)
            now = self.runner.now()
            if outcome.passed:
                consecutive = counted = 0
            else:
                consecutive += 1
                if spec.started_at is None or now - spec.started_at >= check.grace:
                    counted += 1
            self._record(
                CheckResult(
                    name=check.name,
                    service=spec.service,
                    status=CheckStatus.PASSING if outcome.passed else CheckStatus.CRITICAL,
                    output=outcome.output,
                    time=now,
                    consecutive_failures=consecutive,
                )
            )
            if check.on_failure == "restart" and counted >= check.failures_before_restart:
                reason = f"check {check.name} failed {counted} times: {outcome.output}"
                log.info("alloc %s: restarting task %s: %s", self.runner.id, spec.task, reason)
                self.runner.dispatch(
                    RestartRequested(now, spec.task, reason=_clip(reason), counts=True)
                )
                return
            await asyncio.sleep(check.interval)

    async def run_once(self, check: Check, service: str, task: str) -> Outcome:
        """Run ``check`` once for this allocation (any error is a failed check)."""
        try:
            if check.type == "script":
                return await script_check(
                    check.command,
                    check.args,
                    env=self.runner.build_env(task),
                    cwd=str(self.runner.task_dir(task)),
                    timeout=check.timeout,
                )
            target = self._target(check, service)
            if isinstance(target, Outcome):
                return target
            host, port = target
            if check.type == "tcp":
                return await tcp_check(host, port, timeout=check.timeout)
            return await http_check(
                host,
                port,
                check.path,
                method=check.method,
                expected_status=check.expected_status,
                timeout=check.timeout,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("alloc %s: check %s failed to run", self.runner.id, check.name)
            return Outcome(False, f"the check could not run: {type(exc).__name__}: {exc}")

    def _target(self, check: Check, service: str) -> tuple[str, int] | Outcome:
        label = check.port or self._service_port(service)
        port = self.runner.machine.ports.get(label)
        if port is None:
            return Outcome(False, f"port {label!r} has no number on this node")
        host = "127.0.0.1" if port.host_ip in _WILDCARD else port.host_ip
        return host, port.value

    def _service_port(self, service: str) -> str:
        group = self.runner.machine.spec.groups[self.runner.alloc.group]
        svc: Service | None = next((s for s in group.services if s.name == service), None)
        return svc.port if svc is not None else ""

    async def _health_loop(self, name: str, spec: _Spec) -> None:
        while True:
            handle = self.runner.handles.get(spec.task)
            if handle is None:
                return
            try:
                async with asyncio.timeout(DRIVER_HEALTH_TIMEOUT):
                    health: DriverHealth | None = await self.runner.driver_for(spec.task).health(
                        handle
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                health = DriverHealth(healthy=False, output=f"driver health unknown: {exc}")
            if health is None:  # the driver keeps no verdict for this task
                if self.runner.check_results.pop(name, None) is not None:
                    self.runner.host.report(self.runner.id)
                return
            status = (
                CheckStatus.PENDING
                if health.healthy is None
                else CheckStatus.PASSING
                if health.healthy
                else CheckStatus.CRITICAL
            )
            old = self.runner.check_results.get(name)
            failures = 0
            if status == CheckStatus.CRITICAL:
                failures = (old.consecutive_failures if old is not None else 0) + 1
            self._record(
                CheckResult(
                    name=name,
                    service="",
                    status=status,
                    output=_clip(health.output),
                    time=self.runner.now(),
                    consecutive_failures=failures,
                )
            )
            await asyncio.sleep(DRIVER_HEALTH_INTERVAL)


__all__ = [
    "AllocChecks",
    "Outcome",
    "http_check",
    "script_check",
    "tcp_check",
]
