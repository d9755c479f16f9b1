"""Running one task: a built-in answered in process, or a command in the sandbox; always a Result."""

import logging
import time

import msgspec

from bus import tracing
from bus.messages import RETRYABLE_EXIT_CODE, ErrorKind, Result, Task
from bus.states import MODEL_TOOL
from sandbox import Backend, Limits, Outcome, SandboxCall, SandboxError
from worker import metrics
from worker.model_turn import Ask, TurnFailed, run_turn
from worker.tool_logs import LiveStderr, Publish

log = logging.getLogger(__name__)


class Executor:
    def __init__(
        self, backend: Backend, worker_id: str, publish_log: Publish | None = None, ask_model: Ask | None = None
    ) -> None:
        """``publish_log``: where a sandboxed tool's stderr goes while it runs (tool_logs); None: nowhere.
        ``ask_model``: how a model turn (the ``@model`` built-in) reaches the gateway; None: it cannot."""
        self._backend = backend
        self._worker_id = worker_id
        self._publish_log = publish_log
        self._ask_model = ask_model

    async def execute(self, task: Task, traceparent: str | None = None, *, first: bool = False) -> Result:
        """Run ``task``; ``traceparent`` is the trace context the tool gets as ``TRACEPARENT``; ``first``: this
        is the first delivery of the task's first attempt."""
        started = time.time()
        if task.runtime.builtin is not None:
            return await self._builtin(task, started, first)
        if not tracing.enabled:
            return await self._sandboxed(task, started, traceparent)
        with tracing.tracer.start_as_current_span(
            f"sandbox {task.tool}", attributes={"agentflow.sandbox": self._backend.kind}
        ):
            return await self._sandboxed(task, started, tracing.current_traceparent())

    async def _sandboxed(self, task: Task, started: float, traceparent: str | None) -> Result:
        env = {"AF_RUN_ID": task.run_id, "AF_TASK_ID": task.task_id, "AF_ATTEMPT": str(task.attempt)}
        if traceparent:
            env["TRACEPARENT"] = traceparent
        live = None if self._publish_log is None else LiveStderr(task, self._worker_id, self._publish_log)
        call = SandboxCall(
            call_id=f"{task.task_id}-{task.attempt}",
            command=tuple(task.runtime.command),
            stdin=bytes(task.input),
            files=task.runtime.files,
            env=env,
            limits=Limits(
                wall_seconds=task.limits.wall_seconds,
                cpu_seconds=task.limits.cpu_seconds,
                memory_mb=task.limits.memory_mb,
                processes=task.limits.processes,
                output_bytes=task.limits.output_bytes,
            ),
            network=task.network,
            image=task.runtime.image,
            pool=f"{task.tenant}/{task.tool}",
            warm=task.runtime.warm,
            prestart=task.runtime.prestart,
            reuse=task.runtime.reuse,
            on_stderr=None if live is None else live.write,
        )
        kind = self._backend.kind
        # run() takes a ready warm sandbox before its first await, so nothing can take it between this look
        # and the call.
        start = "warm" if self._backend.warm_containers(call) else "cold"
        try:
            outcome = await self._backend.run(call)
        except SandboxError as error:
            metrics.SANDBOX_FAILURES.add((kind, "start"))
            return self._failed(task, started, "sandbox", f"the sandbox could not start the tool: {error}")
        finally:
            if live is not None:
                await live.close()
        metrics.SANDBOX_STARTS.add((kind, start))
        if outcome.timed_out or outcome.output_truncated or (outcome.exit_code or 0) < 0:
            reason = "timeout" if outcome.timed_out else "output" if outcome.output_truncated else "crash"
            metrics.SANDBOX_FAILURES.add((kind, reason))
        return self._from_outcome(task, started, outcome)

    async def _builtin(self, task: Task, started: float, first: bool) -> Result:
        if task.runtime.builtin == "noop":
            return self._result(task, started, ok=True, output=task.input, sandbox="builtin")
        if task.runtime.builtin == MODEL_TOOL and self._ask_model is not None:
            try:
                output = await run_turn(self._ask_model, task, first=first)
            except TurnFailed as failure:
                return self._failed(task, started, "retryable" if failure.retryable else "exit", failure.reason)
            return self._result(task, started, ok=True, output=msgspec.Raw(output), sandbox="builtin")
        return self._failed(task, started, "sandbox", f"unknown built-in tool {task.runtime.builtin!r}")

    def _from_outcome(self, task: Task, started: float, outcome: Outcome) -> Result:
        measured = {
            "exit_code": outcome.exit_code,
            "stderr_tail": outcome.stderr_tail or None,
            "cpu_seconds": outcome.cpu_seconds,
            "max_rss_kb": outcome.max_rss_kb,
            "start_seconds": outcome.start_seconds,
            "run_seconds": outcome.duration_seconds,
        }
        if outcome.timed_out:
            reason = f"timed out after {task.limits.wall_seconds:g} s (wall-clock limit)"
            return self._failed(task, started, "timeout", reason, outcome.kind, **measured)
        if outcome.output_truncated:
            reason = f"output exceeded {task.limits.output_bytes} bytes"
            return self._failed(task, started, "output-too-large", reason, outcome.kind, **measured)
        if outcome.exit_code != 0:
            last = (outcome.stderr_tail.strip().splitlines() or [""])[-1]
            code = outcome.exit_code or 0
            if code < 0:
                kind: ErrorKind = "crash"
                reason = f"killed by signal {-code}"
            else:
                kind = "retryable" if code == RETRYABLE_EXIT_CODE else "exit"
                reason = f"exited with code {code}"
            if outcome.memory_exceeded:
                reason = f"memory limit ({task.limits.memory_mb} MiB) exceeded"
            elif last:
                reason += f": {last}"
            return self._failed(task, started, kind, reason, outcome.kind, **measured)
        try:
            msgspec.json.decode(outcome.stdout)
        except msgspec.DecodeError as error:
            reason = f"the tool's output is not one JSON document: {error}"
            return self._failed(task, started, "bad-output", reason, outcome.kind, **measured)
        return self._result(
            task, started, ok=True, output=msgspec.Raw(outcome.stdout), sandbox=outcome.kind, **measured
        )

    def cancelled(self, task: Task, started: float) -> Result:
        """The result of an attempt stopped because the control plane cancelled its task."""
        return self._failed(task, started, "cancelled", "cancelled by the control plane", self._backend.kind)

    def _failed(
        self,
        task: Task,
        started: float,
        kind: ErrorKind,
        reason: str,
        sandbox: str = "none",
        **measured: object,
    ) -> Result:
        log.info("task %s attempt %d failed: %s", task.task_id, task.attempt, reason)
        return self._result(task, started, ok=False, error=reason, error_kind=kind, sandbox=sandbox, **measured)

    def _result(self, task: Task, started: float, **fields: object) -> Result:
        return Result(
            tenant=task.tenant,
            run_id=task.run_id,
            task_id=task.task_id,
            attempt=task.attempt,
            worker_id=self._worker_id,
            started_at=started,
            finished_at=time.time(),
            **fields,  # type: ignore[arg-type]
        )
