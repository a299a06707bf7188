"""The LLM client against the fake server over real HTTP: retries, limits, cost, cache, keys."""

from __future__ import annotations

import logging
import time
from decimal import Decimal

import pytest

from app.errors import InvalidInput
from app.llm import ChatRequest, LLMCallFailed, LLMPool, resolve_endpoint
from app.llm import cache as llm_cache
from app.llm.client import retry_after_seconds
from app.llm.ratelimit import RateLimiter

from .conftest import llm_settings

KEY = "sk-test-SECRET-KEY"


def ask(text: str, **params) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], params=params)


@pytest.fixture
async def pool(forge_settings, engine, db_url):
    p = LLMPool(forge_settings, engine)
    yield p
    await p.close()


async def test_retry_after_is_honoured(pool, forge_settings, fake):
    fake.add_fault("429", times=2, retry_after=0.3, match="busy")
    started = time.monotonic()
    result = await pool.chat(resolve_endpoint(forge_settings, "generator"), ask("busy server"))
    assert result.attempts == 3
    assert fake.count("busy") == 3
    # two waits of the server's 0.3 s, not the 0.01 s backoff the settings would give
    assert time.monotonic() - started >= 0.55


async def test_retries_are_bounded_then_the_call_fails_with_the_reason(pool, forge_settings, fake):
    fake.add_fault("500", match="broken")
    with pytest.raises(LLMCallFailed) as info:
        await pool.chat(resolve_endpoint(forge_settings, "generator"), ask("broken"))
    assert fake.count("broken") == forge_settings.llm_max_attempts == info.value.attempts
    assert "HTTP 500" in info.value.reason and "after 3 attempts" in info.value.reason


async def test_dropped_connections_and_slow_replies_are_retried(base_settings, fake, engine, db_url):
    settings = llm_settings(base_settings, fake, llm_timeout_s=0.5)
    pool = LLMPool(settings, engine)
    endpoint = resolve_endpoint(settings, "generator")
    try:
        fake.add_fault("drop", times=1, match="dropped")
        fake.add_fault("slow", times=1, delay_s=2.0, match="slowly")
        dropped = await pool.chat(endpoint, ask("dropped"))
        slow = await pool.chat(endpoint, ask("slowly"))
        assert (dropped.attempts, slow.attempts) == (2, 2)
        assert fake.count("dropped") == fake.count("slowly") == 2
        fake.add_fault("slow", delay_s=2.0, match="always slow")
        with pytest.raises(LLMCallFailed, match="timed out"):
            await pool.chat(endpoint, ask("always slow"))
    finally:
        await pool.close()


async def test_client_errors_are_not_retried_and_keys_never_leak(pool, forge_settings, fake, caplog):
    fake.add_fault("401", match="who am i")
    with caplog.at_level(logging.DEBUG), pytest.raises(LLMCallFailed) as info:
        await pool.chat(resolve_endpoint(forge_settings, "generator"), ask("who am i"))
    assert fake.count("who am i") == 1  # a 401 will not get better by asking again
    assert "HTTP 401" in info.value.reason
    assert KEY not in info.value.reason and KEY not in caplog.text
    assert KEY not in repr(resolve_endpoint(forge_settings, "generator"))


async def test_cost_comes_from_the_price_table(pool, forge_settings):
    endpoint = resolve_endpoint(forge_settings, "generator")
    r = await pool.chat(endpoint, ask("price me"))
    assert r.prompt_tokens > 0 and r.completion_tokens > 0
    assert r.cost == (Decimal(r.prompt_tokens) * 1000 + Decimal(r.completion_tokens) * 2000) / 1_000_000
    other = await pool.chat(endpoint, ChatRequest(messages=[{"role": "user", "content": "x"}], model="unpriced"))
    assert other.cost == 0


async def test_cached_answers_are_free_and_skip_the_server(pool, forge_settings, fake, session):
    endpoint = resolve_endpoint(forge_settings, "generator")
    first = await pool.chat(endpoint, ask("remember me", seed=3))
    await llm_cache.store(session, [first.cache_row()])
    await session.commit()
    again = await pool.chat(endpoint, ask("remember me", seed=3))
    other_seed = await pool.chat(endpoint, ask("remember me", seed=4))
    assert again.cached and again.text == first.text and again.cost == 0
    assert not other_seed.cached
    assert fake.count("remember me") == 2


def test_retry_after_header_forms():
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert 0 < retry_after_seconds({"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"})
    assert retry_after_seconds({"retry-after": "soon"}) is None


async def test_rate_limits_are_shared_across_workers(database_url, db_url, forge_settings):
    """Two limiters on two engines stand for two worker processes: one budget between them."""
    from app import db

    engines = [db.make_engine(database_url, forge_settings) for _ in range(2)]
    try:
        a, b = (RateLimiter(e) for e in engines)
        started = time.monotonic()
        delays = [await (a if i % 2 else b)._reserve("rpm:test", 60, 1) for i in range(62)]
        took = time.monotonic() - started
        assert delays[:60] == [0.0] * 60  # a minute's worth at once
        # then one a second, whoever asks: due 1 s and 2 s after the first, less the time since
        assert 0.9 - took < delays[60] <= 1.0 and 1.9 - took < delays[61] <= 2.0
        # tokens: a 600-token call against 1200 TPM, then the unused part given back
        assert await a._reserve("tpm:test", 1200, 1200) == 0.0
        assert 29 < await b._reserve("tpm:test", 1200, 600) <= 30.5
        await a.refund_tokens("test", 1200, reserved=600, used=0)
        assert 0 < await b._reserve("tpm:test", 1200, 1) < 30
    finally:
        for e in engines:
            await e.dispose()


def test_endpoint_overrides_never_hand_the_key_to_another_url(forge_settings, monkeypatch):
    same = resolve_endpoint(forge_settings, "judge", {"llm": {"judge": {"model": "big-judge", "params": {"top_p": 0.5}}}})
    assert (same.model, same.api_key, same.params["top_p"]) == ("big-judge", KEY, 0.5)
    elsewhere = resolve_endpoint(forge_settings, "judge", None, {"judge": {"base_url": "http://example.invalid/v1"}})
    assert elsewhere.api_key is None
    monkeypatch.setenv("FORGE_LLM_KEY_OTHER", "sk-other")
    named = resolve_endpoint(
        forge_settings, "judge", None, {"judge": {"base_url": "http://example.invalid/v1", "api_key_env": "FORGE_LLM_KEY_OTHER"}}
    )
    assert named.api_key == "sk-other"
    with pytest.raises(InvalidInput):
        resolve_endpoint(forge_settings, "judge", None, {"judge": {"api_key_env": "FORGE_LLM_API_KEY"}})
    with pytest.raises(InvalidInput):
        resolve_endpoint(forge_settings, "judge", None, {"judge": {"api_key": "sk-inline"}})
