"""A small OpenAI-compatible server (FastAPI) backed by the transformers backend.

`create_openai_app(model_name, loaded_model)` serves one loaded checkpoint at `/v1/models`,
`/v1/completions` and `/v1/chat/completions` with n, temperature (0 = greedy), top_p, max_tokens, seed,
stop, logprobs (completions: `logprobs: k`; chat: `logprobs: true` + `top_logprobs: k`), usage, and the
vLLM extensions `ignore_eos`, `add_special_tokens` (completions), `continue_final_message` /
`add_generation_prompt` (chat: continue the final assistant message, used by verdict forcing) and
grammar-constrained sampling: `guided_grammar: "<EBNF>"` or `structured_outputs: {"grammar": "<EBNF>"}` (enforced
with xgrammar, `generators.constrained`; an invalid grammar is a 400). `create_openai_app(..., grammar=False)`
refuses those fields with a 400, as a server without structured outputs does. Log-probabilities come from the raw
logits. Streaming is not supported.

Stop strings stop generation, as vLLM does: a row stops at the token that completes one of `stop` (a
StoppingCriteria, `generators.constrained.stop_strings_stopping`); its text is cut before the stop string (not
included), `finish_reason` is "stop" and `stop_reason` (vLLM's field) the stop string; at EOS `stop_reason` is
null. `usage.completion_tokens` counts the tokens generated up to and including the one that completed the stop
string (vLLM's convention: that token is part of the output's token ids though its text is cut), an EOS
included; the logprobs cover the tokens of the kept text (those starting before the stop string).

`create_openai_app(..., request_log=L)` records every generation request: `L` a list (each request appends a
dict) or a path (each request appends one JSON line) of {"endpoint" ("completions" | "chat"),
"continue_final_message", "prefix" (chat continuing: the final assistant message's content; completions: the
prompt's tail from its last "```" on, else its last 512 characters; chat otherwise: null), "prompt_tokens",
"completion_tokens" (the response's usage), "n", "constrained", "time" (unix seconds at receipt)}.
`sqlarbiter models serve-openai --request-log PATH` writes one.
Requests are served one generation at a time (the model's lock). It is what the tests run the HTTP
backends against, and `sqlarbiter models serve-openai` serves it. `serve_in_thread(app)` starts it with
uvicorn on a free loopback port for tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from core.runtime.checkpoint import LoadedModel
from core.runtime.hf import Sample, encode, sample

MAX_N = 16
MAX_TOKENS = 8192
MAX_TOP_LOGPROBS = 20


class _Req(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    ignore_eos: bool = False
    guided_grammar: str | None = None  # vLLM (< 0.10) structured-outputs field
    structured_outputs: dict[str, Any] | None = None  # vLLM >= 0.10: {"grammar": "<EBNF>"}

    def grammar(self) -> str | None:
        so = self.structured_outputs or {}
        return self.guided_grammar or (so.get("grammar") if isinstance(so, dict) else None)


class CompletionRequest(_Req):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    add_special_tokens: bool = True  # vLLM extension: False for prompts that already hold their special tokens


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str


class ChatRequest(_Req):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    # vLLM extensions: continue the last (assistant) message instead of opening a new turn
    add_generation_prompt: bool = True
    continue_final_message: bool = False


def _stops(stop: str | list[str] | None) -> list[str] | None:
    return [stop] if isinstance(stop, str) else stop


def _token_text(tok: Any, i: int) -> str:
    return tok.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)


PREFIX_TAIL = 512


def _prompt_tail(prompt: str) -> str:
    """A completions prompt's tail that holds a continued answer: from its last "```" on, else the last 512
    characters."""
    at = prompt.rfind("```")
    return prompt[at:] if at >= 0 else prompt[-PREFIX_TAIL:]


def _request_logger(request_log: list | str | Path | None):
    if request_log is None:
        return None
    if isinstance(request_log, list):
        return request_log.append
    path = Path(request_log)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()

    def write(entry: dict) -> None:
        with lock, path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    return write


def create_openai_app(model_name: str, loaded_model: LoadedModel, *, grammar: bool = True,
                      request_log: list | str | Path | None = None) -> FastAPI:
    """The FastAPI app serving `loaded_model` under the name `model_name`; `grammar=False` refuses
    grammar-constrained requests (HTTP 400); `request_log` (a list, or a JSONL file path) records every
    generation request (see the module docstring)."""
    app = FastAPI(title="sqlarbiter OpenAI-compatible server", version="1")
    lm = loaded_model
    tok = lm.tokenizer
    created = int(time.time())
    log = _request_logger(request_log)

    def record(endpoint: str, req: _Req, t0: float, prefix: str | None, usage: dict, continuing: bool) -> None:
        if log is not None:
            log({"endpoint": endpoint, "continue_final_message": continuing, "prefix": prefix,
                 "prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
                 "n": req.n, "constrained": req.grammar() is not None, "time": t0})

    def check(req: _Req) -> None:
        if req.stream:
            raise HTTPException(400, "stream=true is not supported by this server")
        if req.model not in (None, model_name):
            raise HTTPException(404, f"model {req.model!r} not found; this server serves {model_name!r}")
        if req.grammar() is not None and not grammar:
            raise HTTPException(400, "guided_grammar / structured_outputs are not supported by this server")

    def run(prompt_ids: list[int], req: _Req, max_tokens: int,
            k: int | None) -> list[tuple[Sample, str, list, str | None]]:
        if not prompt_ids:
            raise HTTPException(400, "empty prompt")
        from generators.constrained import grammar_processor, stop_cut, stop_strings_stopping

        stops = [x for x in (_stops(req.stop) or []) if x]
        extra: dict[str, Any] = {}
        if req.grammar() is not None:
            try:
                extra["logits_processor"] = grammar_processor(lm, req.grammar())
            except Exception as e:  # noqa: BLE001 - xgrammar raises RuntimeError/ValueError on a bad grammar
                raise HTTPException(400, f"invalid grammar: {type(e).__name__}: {str(e)[:300]}") from None
        if stops:
            extra["stopping_criteria"] = stop_strings_stopping(tok, len(prompt_ids), stops)
        samples = sample(lm, prompt_ids, n=req.n, temperature=req.temperature, top_p=req.top_p, max_tokens=max_tokens,
                         seed=req.seed, logprobs=k, stop=None, ignore_eos=req.ignore_eos, **extra)
        out = []
        for s in samples:
            # text = concatenation of the token strings (special tokens dropped), so offsets are exact
            cut = stop_cut(tok, s.ids, stops)
            stop_reason = None
            if cut.stop is not None:
                # generation stopped at the token that completed the stop string: the row's tokens after it are
                # padding of the batched decode (rows that went on), not generated for this row
                s.ids = s.ids[: cut.n_decoded]
                s.finish_reason, stop_reason = "stop", cut.stop
            out.append((s, cut.text, cut.spans, stop_reason))
        return out

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": model_name}

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "sqlarbiter", "root": str(lm.path)}]}

    @app.post("/v1/completions")
    def completions(req: CompletionRequest) -> dict:
        t0 = time.time()
        check(req)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            raise HTTPException(400, "prompt is empty")
        choices, p_tok, c_tok = [], 0, 0
        for prompt in prompts:
            ids = encode(lm, prompt, templated=not req.add_special_tokens)
            p_tok += len(ids)
            for s, text, spans, stop_reason in run(ids, req, req.max_tokens or 16, req.logprobs):
                c_tok += len(s.ids)
                lp = None
                if req.logprobs is not None:
                    lp = {"tokens": [text[a:b] for a, b in spans], "token_logprobs": s.token_logprobs[: len(spans)],
                          "top_logprobs": [{_token_text(tok, i): v for i, v in top} for top in s.top_logprobs[: len(spans)]]
                          if req.logprobs else None,
                          "text_offset": [a for a, _ in spans]}
                choices.append({"index": len(choices), "text": text, "logprobs": lp, "finish_reason": s.finish_reason,
                                "stop_reason": stop_reason})
        usage = {"prompt_tokens": p_tok, "completion_tokens": c_tok, "total_tokens": p_tok + c_tok}
        record("completions", req, t0, _prompt_tail(prompts[-1]), usage, False)
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": model_name, "choices": choices, "usage": usage}

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest) -> dict:
        t0 = time.time()
        check(req)
        msgs = [m.model_dump() for m in req.messages]
        if req.continue_final_message and (req.add_generation_prompt or msgs[-1]["role"] != "assistant"):
            raise HTTPException(400, "continue_final_message needs add_generation_prompt=false and a final "
                                     "assistant message")
        from core.runtime.chat import render_continuation, render_plain

        if req.continue_final_message:
            text = render_continuation(tok, msgs)  # ends with the final message's content, byte for byte
        elif lm.has_chat_template():
            text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=req.add_generation_prompt)
        else:
            text = render_plain(msgs)
        ids = encode(lm, text, templated=lm.has_chat_template())
        k = (req.top_logprobs or 0) if req.logprobs else None
        choices, c_tok = [], 0
        for s, out_text, spans, stop_reason in run(ids, req, req.max_completion_tokens or req.max_tokens or 1024, k):
            c_tok += len(s.ids)
            lp = None
            if req.logprobs:
                content = []
                for j, (a, b) in enumerate(spans):
                    t = out_text[a:b]
                    content.append({"token": t, "logprob": s.token_logprobs[j], "bytes": list(t.encode()),
                                    "top_logprobs": [{"token": _token_text(tok, i), "logprob": v,
                                                      "bytes": list(_token_text(tok, i).encode())}
                                                     for i, v in (s.top_logprobs[j] if k else [])]})
                lp = {"content": content}
            choices.append({"index": len(choices), "message": {"role": "assistant", "content": out_text},
                            "logprobs": lp, "finish_reason": s.finish_reason, "stop_reason": stop_reason})
        usage = {"prompt_tokens": len(ids), "completion_tokens": c_tok, "total_tokens": len(ids) + c_tok}
        record("chat", req, t0, msgs[-1]["content"] if req.continue_final_message else None, usage,
               req.continue_final_message)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": model_name, "choices": choices, "usage": usage}

    return app


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run `app` with uvicorn in a background thread; yields the base URL (http://host:port/v1).
    port 0 binds a free port (the socket is bound before the server starts: no race)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not t.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the OpenAI-compatible test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        t.join(timeout=10)
        sock.close()
