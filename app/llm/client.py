"""Every LLM call goes through here: the official `openai` async client with a configurable
base_url, tenacity retries (Retry-After honoured), a request timeout, a concurrency limit per
endpoint, shared RPM/TPM limits, cost from the price table and the response cache."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

import httpx2
import openai
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from tenacity.wait import wait_base

from app.config import Settings
from app.llm import cache
from app.llm.cost import call_cost
from app.llm.endpoints import Endpoint, price
from app.llm.ratelimit import RateLimiter
from app.metrics import record_llm_call

log = logging.getLogger(__name__)



class LLMCallFailed(Exception):
    """A call that did not succeed within the attempts allowed; `reason` says why. A reply that
    came back but cannot be used (no choices, empty, a NUL byte) still cost its tokens: they
    are carried here so that the item that asked is billed for them, once."""

    def __init__(self, reason: str, attempts: int, *, prompt_tokens: int = 0, completion_tokens: int = 0,
                 cost: Decimal = Decimal(0)):
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts
        self.prompt_tokens, self.completion_tokens, self.cost = prompt_tokens, completion_tokens, cost


def unusable_text(text: str) -> str | None:
    """Why a reply's text cannot be stored (Postgres text and jsonb refuse NUL; a lone surrogate,
    from a JSON escape, has no UTF-8 form), or None."""
    if "\x00" in text:
        return "the reply holds a NUL byte"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "the reply holds text with no UTF-8 form (a lone surrogate)"
    return None


@dataclass
class ChatRequest:
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # None: the endpoint's model
    # (endpoint, model, params, cache key) as LLMClient._resolve last found them: a request looked
    # up in the cache for its chunk and then sent is hashed once (a request is not changed once made)
    _resolved: tuple[Any, str, dict[str, Any], bytes] | None = field(default=None, repr=False, compare=False)


@dataclass
class ChatResult:
    text: str
    model: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal | None  # None: the model has no price
    latency_ms: int
    cached: bool
    attempts: int
    cache_key: bytes
    params: dict[str, Any]
    choice: int = 0  # which of the call's `n` choices (params["n"]) this is

    def cache_row(self) -> tuple[bytes, str, dict[str, Any]]:
        return self.cache_key, self.model, {
            "text": self.text, "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
        }


def _from_cache(hit: dict[str, Any], model: str, params: dict[str, Any], key: bytes, choice: int = 0) -> ChatResult:
    # a cached answer costs nothing this time: the run did not pay for it
    return ChatResult(
        text=hit["text"], model=model, finish_reason=hit.get("finish_reason"),
        prompt_tokens=hit.get("prompt_tokens", 0), completion_tokens=hit.get("completion_tokens", 0),
        cost=Decimal(0), latency_ms=0, cached=True, attempts=0, cache_key=key, params=params, choice=choice,
    )


def choices_asked(params: dict[str, Any]) -> int:
    """The OpenAI `n` of a request: how many choices (samples) one call asks for."""
    n = params.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def _shares(total: int, n: int) -> list[int]:
    """`total` split into n whole shares that add up to it (the remainder on the first)."""
    return [total // n + (total % n if i == 0 else 0) for i in range(n)]


def _cost_shares(cost: Decimal | None, n: int) -> list[Decimal | None]:
    """A call's cost split into n shares of whole micro-USD that add up to it exactly."""
    if cost is None:
        return [None] * n
    share = (cost / n).quantize(Decimal("0.000001"), rounding=ROUND_DOWN)
    return [cost - share * (n - 1), *[share] * (n - 1)]


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIConnectionError):  # timeouts and dropped connections too
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            try:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


class _WaitRetryAfter(wait_base):
    """The server's Retry-After when it sent one, else exponential backoff with jitter."""

    def __init__(self, fallback: wait_base, cap: float):
        self.fallback, self.cap = fallback, cap

    def __call__(self, retry_state) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, openai.APIStatusError):
            seconds = retry_after_seconds(exc.response.headers)
            if seconds is not None:
                return min(seconds, self.cap)
        return min(self.fallback(retry_state), self.cap)


def _describe(exc: BaseException, secret: str | None) -> str:
    if isinstance(exc, openai.APIStatusError):
        text = f"HTTP {exc.status_code}: {exc.message}"
    elif isinstance(exc, openai.APITimeoutError):
        text = "request timed out"
    elif isinstance(exc, openai.APIConnectionError):
        text = f"connection error: {exc.__cause__ or exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    if secret:
        text = text.replace(secret, "***")
    return text[:500]


def openai_client(endpoint: Endpoint, settings: Settings) -> openai.AsyncOpenAI:
    """The official async client every call to `endpoint` goes through (bench/generation.py
    measures its own loop with this same client: the ceiling of what a pipeline on it can do)."""
    return openai.AsyncOpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key or "unused",
        timeout=settings.llm_timeout_s,
        max_retries=0,  # LLMClient's tenacity loop owns retries
        # the SDK's aiohttp transport: at dozens of requests in flight httpx's pool spends
        # more time checking its connections than sending
        http_client=openai.DefaultAioHttpClient(
            limits=httpx2.Limits(max_connections=None, max_keepalive_connections=endpoint.concurrency)
        ),
    )


class LLMClient:
    """One OpenAI-compatible endpoint (base_url + key), shared by every call to it in this
    process whatever the role; the semaphore is the endpoint's concurrency limit."""

    def __init__(self, endpoint: Endpoint, settings: Settings, engine: AsyncEngine | None):
        self.endpoint = endpoint
        self.settings = settings
        self.engine = engine
        self._openai = openai_client(endpoint, settings)
        self._semaphore = asyncio.Semaphore(endpoint.concurrency)
        self._next_start = 0.0
        self._limiter = RateLimiter(engine) if engine is not None else None

    async def close(self) -> None:
        await self._openai.close()

    async def _pace(self) -> None:
        """Space request starts by llm_request_spacing_ms. Requests that start together come
        back together and then wait on each other's parsing; spaced, they stay spread out."""
        spacing = self.settings.llm_request_spacing_ms / 1000
        if spacing <= 0:
            return
        now = time.monotonic()
        start = max(now, self._next_start)
        self._next_start = start + spacing
        if start > now:
            await asyncio.sleep(start - now)

    @staticmethod
    def _estimate_tokens(req: ChatRequest, params: dict[str, Any]) -> int:
        chars = sum(len(str(m.get("content", ""))) for m in req.messages)
        most = int(params.get("max_tokens") or params.get("max_completion_tokens") or 256)
        return chars // 4 + most * choices_asked(params)

    async def _once(self, endpoint: Endpoint, model: str, req: ChatRequest, params: dict[str, Any]) -> tuple[Any, int]:
        limiter = self._limiter if (endpoint.rpm or endpoint.tpm) else None  # no limit: no round trip
        if limiter:
            scope = f"{endpoint.name}|{model}"  # stored in the limiter table: the name, never the URL
            reserved = self._estimate_tokens(req, params)
            await limiter.acquire(scope, endpoint.rpm, endpoint.tpm, reserved)
        body = {"model": model, "messages": req.messages, **params}
        async with self._semaphore:
            await self._pace()
            started = time.perf_counter()
            # the client's generic post: same transport, auth, errors and retries-off as
            # chat.completions.create, without re-walking our already-plain request body; cast_to
            # object: the reply's JSON decoded once, as plain dicts (no SDK models built per call)
            response = await self._openai.post("/chat/completions", body=body, cast_to=object)
            latency_ms = int((time.perf_counter() - started) * 1000)
        if limiter:
            used = _field(_field(response, "usage"), "total_tokens")
            await limiter.refund_tokens(scope, endpoint.tpm, reserved, _count(used) if used is not None else reserved)
        return response, latency_ms

    def _resolve(self, endpoint: Endpoint, req: ChatRequest) -> tuple[str, dict[str, Any], bytes]:
        memo = req._resolved
        if memo is not None and memo[0] is endpoint:
            return memo[1], memo[2], memo[3]
        model = req.model or endpoint.model
        # how many choices a call asks (`n`) is the request's alone: an `n` among the configured or
        # run's parameters would be paid for n times and read once
        params = {**{p: v for p, v in endpoint.params.items() if p != "n"}, **req.params}
        key = cache.cache_key(endpoint.base_url, model, req.messages, params)
        req._resolved = (endpoint, model, params, key)
        return model, params, key

    async def cached_many(self, endpoint: Endpoint, reqs: list[ChatRequest]) -> list[list[ChatResult] | None]:
        """For each request, the stored answers of its `n` choices (one for most requests), or None
        unless every one of them is stored; in one query."""
        if not (self.settings.llm_cache and self.engine is not None and reqs):
            return [None] * len(reqs)
        resolved = [self._resolve(endpoint, r) for r in reqs]
        keys = [cache.choice_keys(key, choices_asked(params)) for _, params, key in resolved]
        async with self.engine.connect() as conn:
            hits = await cache.lookup_many(conn, [k for ks in keys for k in ks])
        out: list[list[ChatResult] | None] = []
        for (model, params, _), ks in zip(resolved, keys, strict=True):
            if all(k in hits for k in ks):
                record_llm_call(endpoint.name, model, ok=True, cached=True)
                out.append([_from_cache(hits[k], model, params, k, i) for i, k in enumerate(ks)])
            else:
                out.append(None)
        return out

    async def chat(self, endpoint: Endpoint, req: ChatRequest, *, use_cache: bool = True) -> ChatResult:
        """One chat completion for `endpoint` (its model and default parameters under the
        request's); raises LLMCallFailed once the attempts are spent."""
        model, params, key = self._resolve(endpoint, req)
        if choices_asked(params) != 1:
            raise ValueError("chat answers one choice: a request with n > 1 goes to chat_choices")
        if use_cache:
            (hit,) = await self.cached_many(endpoint, [req])
            if hit is not None:
                return hit[0]
        (result,) = await self._call(endpoint, req, model, params, key)
        if isinstance(result, LLMCallFailed):
            raise result
        return result

    async def chat_choices(self, endpoint: Endpoint, req: ChatRequest) -> list[ChatResult | LLMCallFailed]:
        """The `n` choices of one call (params["n"], an endpoint that supports it), each a result or
        why it cannot be used (its share of the call's tokens and cost with it); the call's usage
        and cost are split evenly among the n (exact sums). Raises LLMCallFailed when the call
        itself fails. Not looked up in the cache (cached_many does that for a batch)."""
        model, params, key = self._resolve(endpoint, req)
        return await self._call(endpoint, req, model, params, key)

    async def _call(self, endpoint: Endpoint, req: ChatRequest, model: str, params: dict[str, Any],
                    key: bytes) -> list[ChatResult | LLMCallFailed]:
        attempts = [0]  # how many were made, also when the last one raises
        try:
            response, latency_ms = await self._attempts(endpoint, model, req, params, attempts)
        except (openai.OpenAIError, OSError, ValueError) as exc:  # ValueError: a body that is not JSON or not UTF-8
            # the reason is stored on the item: the endpoint's name, never its URL (credentials)
            reason = _describe(exc, endpoint.api_key).replace(endpoint.base_url, f"<endpoint {endpoint.name}>")
            suffix = f" after {attempts[0]} attempts" if attempts[0] > 1 else ""
            log.warning("LLM call to endpoint %s (%s) failed%s: %s", endpoint.name, model, suffix, reason)
            record_llm_call(endpoint.name, model, ok=False, attempts=attempts[0])
            raise LLMCallFailed(reason + suffix, attempts[0]) from None
        return self._results(response, model, params, key, attempts[0], latency_ms)

    async def _attempts(self, endpoint: Endpoint, model: str, req: ChatRequest, params: dict[str, Any],
                        attempts: list[int]) -> tuple[Any, int]:
        """The call, retried while it fails with a retryable error (up to llm_max_attempts, waiting
        Retry-After or a backoff); `attempts[0]` counts them. The first attempt goes alone and
        tenacity's loop is built only after it failed: most calls succeed at once, and a retry
        loop set up for each cost more than the rest of our bookkeeping of a call. That loop's
        first attempt replays the failure, so its waits and its count are those of one loop over
        every attempt."""
        attempts[0] = 1
        try:
            return await self._once(endpoint, model, req, params)
        except Exception as exc:
            if not _retryable(exc) or self.settings.llm_max_attempts <= 1:
                raise
            replay: Exception | None = exc
        s = self.settings
        retrying = AsyncRetrying(
            stop=stop_after_attempt(s.llm_max_attempts),
            wait=_WaitRetryAfter(
                wait_exponential_jitter(multiplier=s.llm_backoff_initial_s, max=s.llm_backoff_max_s, jitter=s.llm_backoff_initial_s),
                s.llm_backoff_max_s,
            ),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        attempts[0] = 0
        async for attempt in retrying:
            with attempt:
                attempts[0] += 1
                if replay is not None:
                    failed, replay = replay, None
                    raise failed
                response, latency_ms = await self._once(endpoint, model, req, params)
        return response, latency_ms

    def _results(self, response: Any, model: str, params: dict[str, Any], key: bytes, attempts: int,
                 latency_ms: int) -> list[ChatResult | LLMCallFailed]:
        """The reply's `n` choices, each a ChatResult or LLMCallFailed (with its share of the tokens
        it cost) when it holds nothing usable: a 200 is not an answer until it has a non-empty,
        storable text. A reply with fewer choices than asked fails the ones it lacks."""
        n = choices_asked(params)
        usage = _field(response, "usage")
        prompt_tokens = _count(_field(usage, "prompt_tokens", 0))
        completion_tokens = _count(_field(usage, "completion_tokens", 0))
        cost = call_cost(price(self.settings, self.endpoint, model), prompt_tokens, completion_tokens)
        choices = _ordered(_field(response, "choices"), n)
        keys = cache.choice_keys(key, n)
        shares = zip(_shares(prompt_tokens, n), _shares(completion_tokens, n), _cost_shares(cost, n), strict=True)
        out: list[ChatResult | LLMCallFailed] = []
        for i, (choice, (pt, ct, usd)) in enumerate(zip(choices, shares, strict=True)):
            text = _field(_field(choice, "message"), "content")
            if choice is None:
                problem = "the reply has no choices" if n == 1 else f"the reply has {_len(response)} choices of the {n} asked"
            elif not isinstance(text, str) or not text.strip():
                problem = f"the reply is empty (finish_reason {_field(choice, 'finish_reason')!r})"
            else:
                problem = unusable_text(text)
            if problem is not None:
                log.warning("LLM call to endpoint %s (%s)%s: %s", self.endpoint.name, model, f", choice {i}" if n > 1 else "", problem)
                out.append(LLMCallFailed(problem, attempts, prompt_tokens=pt, completion_tokens=ct, cost=usd))
                continue
            out.append(ChatResult(
                text=text, model=_text_or_none(_field(response, "model")) or model,
                finish_reason=_text_or_none(_field(choice, "finish_reason")), prompt_tokens=pt, completion_tokens=ct,
                cost=usd, latency_ms=latency_ms, cached=False, attempts=attempts, cache_key=keys[i], params=params, choice=i,
            ))
        record_llm_call(self.endpoint.name, model, ok=all(isinstance(r, ChatResult) for r in out), attempts=attempts,
                        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost=cost, latency_ms=latency_ms)
        return out


def _ordered(choices: Any, n: int) -> list[Any]:
    """A reply's choices in slots 0..n-1 (by their `index` when each has a distinct one in range,
    else as listed); None where the reply has none."""
    listed = choices if isinstance(choices, list) else []
    indexes = [_field(c, "index") for c in listed]
    if n > 1 and sorted(i for i in indexes if isinstance(i, int) and not isinstance(i, bool)) == list(range(len(listed))):
        listed = sorted(listed, key=lambda c: _field(c, "index"))
    return (listed + [None] * n)[:n]


def _len(response: Any) -> int:
    choices = _field(response, "choices")
    return len(choices) if isinstance(choices, list) else 0


def _field(obj: Any, name: str, default: Any = None) -> Any:
    """obj[name] of a reply we do not trust: the default unless obj is a JSON object holding it."""
    return obj.get(name, default) if isinstance(obj, dict) else default


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int:
    """A token count from a reply we do not trust: a non-negative int, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class LLMPool:
    """The clients of this process, one per (base_url, key); closed together."""

    def __init__(self, settings: Settings, engine: AsyncEngine | None):
        self.settings = settings
        self.engine = engine
        self._clients: dict[tuple[str, str | None], LLMClient] = {}

    def client(self, endpoint: Endpoint) -> LLMClient:
        ident = (endpoint.base_url, endpoint.api_key)
        found = self._clients.get(ident)
        if found is None:
            found = self._clients[ident] = LLMClient(endpoint, self.settings, self.engine)
        return found

    async def chat(self, endpoint: Endpoint, req: ChatRequest, *, use_cache: bool = True) -> ChatResult:
        return await self.client(endpoint).chat(endpoint, req, use_cache=use_cache)

    async def chat_choices(self, endpoint: Endpoint, req: ChatRequest) -> list[ChatResult | LLMCallFailed]:
        return await self.client(endpoint).chat_choices(endpoint, req)

    async def cached_many(self, endpoint: Endpoint, reqs: list[ChatRequest]) -> list[list[ChatResult] | None]:
        return await self.client(endpoint).cached_many(endpoint, reqs)

    async def close(self) -> None:
        for c in self._clients.values():
            await c.close()
        self._clients.clear()
