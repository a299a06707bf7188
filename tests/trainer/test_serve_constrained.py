"""The local server enforces `response_format`: constrained decoding makes even a random tiny
model's replies valid against the JSON schema, every time; and it scores texts with a reward
model (`POST /v1/rewards`)."""

import json
import threading

import httpx
import openai
import pytest

from app.judging import templates as tpl
from trainer.config import RMConfig
from trainer.formats import sha256_file
from trainer.rm import train_rm
from trainer.serve import ChatModel, make_server

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}, "maxItems": 3},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "tags", "ok"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def rm_root(tmp_path_factory, exports):
    root = tmp_path_factory.mktemp("rm-root")
    train_rm(RMConfig(data=str(exports["rm"]), model="tiny", out=str(root / "rm"), max_steps=3, batch_size=4))
    return root


@pytest.fixture(scope="module")
def server(rm_root):
    srv = make_server(ChatModel("tiny", name="tiny-local"), "127.0.0.1", 0, reward_roots=[rm_root])
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}/v1"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server, api_key="unused", max_retries=0, timeout=120)


def _ask(client, response_format, seed, max_tokens=1500):
    r = client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "Rank these."}], max_tokens=max_tokens, temperature=1.0, seed=seed,
        response_format=response_format,
    )
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    return json.loads(r.choices[0].message.content)


@pytest.mark.parametrize("seed", range(6))
def test_random_model_always_answers_the_judge_schemas(client, seed):
    from app.judging.parsing import parse_listwise

    listwise = _ask(client, tpl.listwise_format(4), seed)
    assert set(listwise) == {"rationale", "ranks"} and sorted(listwise["ranks"]) == [1, 2, 3, 4]
    assert len(listwise["rationale"]) <= 300
    parse_listwise(json.dumps(listwise), 4, allow_ties=False)  # what the judge does with it
    tied = _ask(client, tpl.listwise_format(3, allow_ties=True), seed)
    parse_listwise(json.dumps(tied), 3, allow_ties=True)
    assert _ask(client, tpl.pairwise_format(), seed)["winner"] in ("A", "B", "tie")
    scores = _ask(client, tpl.rubric_format(2, ["helpfulness"]), seed)["scores"]
    assert len(scores) == 2 and all(1 <= s["helpfulness"] <= 5 for s in scores)


def test_any_json_schema_and_json_object(client):
    for seed in range(3):
        person = _ask(client, {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}, seed)
        assert set(person) == {"name", "age", "tags", "ok"} and 0 <= person["age"] <= 130
        assert isinstance(person["ok"], bool) and set(person["tags"]) <= {"a", "b", "c"}
        assert isinstance(_ask(client, {"type": "json_object"}, seed, max_tokens=4000), dict)


def test_a_schema_it_cannot_enforce_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as exc:
        _ask(client, {"type": "json_schema", "json_schema": {"name": "p", "schema": "not a schema"}}, 0)
    assert exc.value.body["param"] == "response_format"
    with pytest.raises(openai.BadRequestError):
        _ask(client, {"type": "xml"}, 0)


def test_rewards_route_scores_with_provenance(server, rm_root, exports):
    body = {"model": str(rm_root / "rm"), "input": [{"prompt": "2+5=", "completion": "7"}, {"prompt": "2+5=", "completion": "13"}]}
    r = httpx.post(server + "/rewards", json=body, timeout=60)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert [d["index"] for d in reply["data"]] == [0, 1] and all(isinstance(d["score"], float) for d in reply["data"])
    assert reply["provenance"]["manifest_sha256"] == sha256_file(exports["manifest"])
    assert httpx.post(server + "/rewards", json=body, timeout=60).json()["data"] == reply["data"]  # loaded once, same scores

    outside = httpx.post(server + "/rewards", json={**body, "model": "/etc"}, timeout=10)
    assert outside.status_code == 400 and "--reward-root" in outside.json()["error"]["message"]
    not_rm = httpx.post(server + "/rewards", json={**body, "model": str(rm_root)}, timeout=10)
    assert not_rm.status_code == 400 and "not a reward-model folder" in not_rm.json()["error"]["message"]
    empty = httpx.post(server + "/rewards", json={**body, "input": []}, timeout=10)
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "input"
