"""Rendering a dataset's own judge template, which nobody should be able to use to stop the
service: the template runs in a Jinja sandbox that caps `range` and the size of `*` / `+`
results, inside a child process that has a memory limit (RLIMIT_AS), a CPU limit and a
wall-clock deadline after which it is killed. No loop, recursion or string product in a template
can hold the event loop, a worker thread or the service's memory.

The output is cached per (template, k, allow_ties, aspects): the candidates' data block is
rendered as a marker and put in afterwards, so a judge run starts a child only a few times.
Run as `python -m app.judging.sandbox`, this module is that child: a JSON job on stdin, a JSON
answer on stdout."""

from __future__ import annotations

import asyncio
import json
import sys
from concurrent.futures import Future
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment, SecurityError

MAX_RANGE = 1000  # items a template's range() may make
MAX_SIZE = 1_000_000  # characters / items a `*` or `+` in a template may make
TIMEOUT_S = 5.0  # wall clock for one render, process start included
MEMORY_BYTES = 512 * 1024**2  # the child's address space
DATA_MARK = "\x00forge:data\x00"  # stands for the data block while rendering
CACHE_SIZE = 512


class RenderError(Exception):
    """The template cannot be rendered; the message says why."""


def _range(*args: int) -> range:
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise SecurityError(f"range() is limited to {MAX_RANGE} items in a judge template")
    return r


def _size(v: Any) -> int | None:
    return len(v) if isinstance(v, (str, bytes, list, tuple)) else None


class BoundedSandbox(SandboxedEnvironment):
    """Jinja's sandbox (no attribute escapes) with `range` capped and `*`, `**`, `+` bounded."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False)
        self.globals["range"] = _range

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, (int, float)) and not -64 <= right <= 64:
            raise SecurityError("exponents are limited to 64 in a judge template")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if _size(seq) is not None and isinstance(n, int) and _size(seq) * n > MAX_SIZE:
                    raise SecurityError(f"a repeated string or list is limited to {MAX_SIZE} items in a judge template")
        if operator == "+" and _size(left) is not None and _size(right) is not None and _size(left) + _size(right) > MAX_SIZE:
            raise SecurityError(f"strings and lists are limited to {MAX_SIZE} items in a judge template")
        return super().call_binop(context, operator, left, right)


def render_here(system: str, user: str, variables: dict[str, Any]) -> tuple[str, str]:
    """Render in this process: for the built-in templates, and inside the child."""
    env = BoundedSandbox()
    try:
        return env.from_string(system).render(**variables), env.from_string(user).render(**variables)
    except (TemplateError, SecurityError) as exc:
        raise RenderError(str(exc)) from None


async def _render_in_child(system: str, user: str, variables: dict[str, Any]) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.judging.sandbox",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    job = json.dumps({"system": system, "user": user, "variables": variables}).encode()
    try:
        out, _ = await asyncio.wait_for(proc.communicate(job), TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RenderError(f"rendering took longer than {TIMEOUT_S:g} s (a loop too long?)") from None
    try:
        answer = json.loads(out)
    except ValueError:
        raise RenderError(f"the renderer stopped (exit status {proc.returncode}): over its CPU or memory limit?") from None
    if "error" in answer:
        raise RenderError(answer["error"])
    return answer["system"], answer["user"]


_cache: dict[tuple, Future] = {}


async def render(system: str, user: str, variables: dict[str, Any], *, isolated: bool) -> tuple[str, str]:
    """(system, user) rendered; `variables["data"]` is put in after rendering, as the template
    shows `{{ data }}`. `isolated`: in a child process with limits (a dataset's own template)."""
    data = variables.get("data", "")
    shape = {**variables, "data": DATA_MARK}
    key = (system, user, json.dumps(shape, sort_keys=True), isolated)
    found = _cache.get(key)
    if found is None:
        # a concurrent.futures.Future: shared by concurrent renders of one key, whatever their event loop
        found = _cache[key] = Future()
        if len(_cache) > CACHE_SIZE:
            _cache.pop(next(iter(_cache)))
        try:
            result = await _render_in_child(system, user, shape) if isolated else render_here(system, user, shape)
            found.set_result(result)
        except BaseException as exc:
            _cache.pop(key, None)
            found.set_exception(exc)
    sys_out, user_out = await asyncio.wrap_future(found)
    if DATA_MARK not in user_out:
        raise RenderError("the user template must show {{ data }} as it is (no filters), once")
    return sys_out.replace(DATA_MARK, data), user_out.replace(DATA_MARK, data)


def _child() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    cpu = int(TIMEOUT_S) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    job = json.load(sys.stdin)
    try:
        sys_out, user_out = render_here(job["system"], job["user"], job["variables"])
        answer = {"system": sys_out, "user": user_out}
    except RenderError as exc:
        answer = {"error": str(exc)}
    except MemoryError:
        answer = {"error": f"the template needs more than {MEMORY_BYTES // 1024**2} MiB"}
    except RecursionError:
        answer = {"error": "the template recurses too deeply"}
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    _child()
