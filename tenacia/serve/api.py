"""The OpenAI-compatible HTTP API and the chat page, in front of a ``ProcessEngine``.

Routes: ``GET /`` (chat page), ``GET /health``, ``GET /metrics`` (Prometheus), ``GET /v1/models``,
``POST /v1/chat/completions``, ``POST /v1/completions``; vLLM's ``POST /tokenize``,
``POST /detokenize`` and ``GET /tokenizer_info``.

Contract:
- Invalid input is a 400 with OpenAI's error JSON naming the parameter (never FastAPI's 422); an
  unknown route 404, a wrong model 404, a missing or wrong API key 401, an oversized body 413,
  more than ``max_concurrent_requests`` requests in flight 429. Nothing a client sends produces a
  5xx; a failure inside the engine is a 500 for the requests it hit, and the server keeps going.
- ``usage`` counts the prompt once per prompt and every generated token of every choice.
- A client that disconnects, streaming or not, has its generation cancelled at the next step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .. import __version__
from .config import ServerConfig
from .engine.process_engine import EngineError, ProcessEngine, RequestHandle
from .engine.schema_budget import SchemaBudget
from .engine.sequence import InvalidRequest
from .guard import BodyTooLarge, Guard
from .metrics import CONTENT_TYPE, ServeMetrics
from .models import ServedModel
from .openapi import install, request_body
from .protocol import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
    error_body,
    parse,
    refuse_unsupported,
    sampling_params,
)
from .reasoning import ThinkSplitter, thinks
from .responses import Collected, Shape, TokenText
from .responses_api import ResponseShape, ResponsesRequest, to_chat_request
from .tools import ToolCallParser, check_tools, make_parser, tool_format, tool_grammar

WEB_DIR = Path(__file__).parent / "web"
MAX_PROMPTS = 16


def create_app(served: ServedModel, engine: ProcessEngine, cfg: ServerConfig, metrics: ServeMetrics) -> Guard:
    """The ASGI app. The app's event loop watches the engine's pipe from its start; the engine
    process stops after the drain."""

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="tenacia", lifespan=lifespan, docs_url=None, redoc_url=None)
    api = _Api(served, engine, cfg)
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, e: BodyTooLarge) -> JSONResponse:
        return JSONResponse(error_body(413, str(e), None, "body_too_large"), status_code=413)

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, e: ClientDisconnect) -> Response:
        return Response(status_code=499)  # the client left during its upload: nobody to answer

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(e.status_code, str(e.detail)), status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(400, str(e)), status_code=400)

    @app.exception_handler(Exception)
    async def _bug(_: Request, e: Exception) -> JSONResponse:
        return JSONResponse(error_body(500, f"internal error: {type(e).__name__}: {e}"), status_code=500)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    @app.get("/health")
    async def health() -> Response:
        """200 while the engine runs; 503 once its process is gone (restart the server)."""
        if engine.dead is not None:
            return JSONResponse({"status": "error", "model": served.name, "error": engine.dead}, status_code=503)
        return JSONResponse({"status": "ok", "model": served.name})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [api.model_card(created)]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str) -> dict[str, Any]:
        api.check_model(model_id)
        return api.model_card(created)

    @app.get("/version")
    async def version() -> dict[str, Any]:
        return {"version": __version__}

    @app.post("/tokenize", openapi_extra=request_body(TokenizeRequest))
    async def tokenize(request: Request) -> dict[str, Any]:
        """vLLM's tokenizer endpoint (outside /v1/, as vLLM has it)."""
        req: TokenizeRequest = parse(await request.body(), TokenizeRequest)
        api.check_model(req.model)
        if (req.prompt is None) == (req.messages is None):
            raise ApiError(400, "give either prompt or messages", "prompt")
        if req.messages is not None:
            text = api.render_chat(req.messages, req.add_generation_prompt)
            ids = api.encode(text, "messages", add_special_tokens=False)
        else:
            ids = api.encode(req.prompt, "prompt", add_special_tokens=req.add_special_tokens)
        return {"tokens": ids, "count": len(ids), "max_model_len": served.max_context}

    @app.get("/tokenizer_info")
    async def tokenizer_info() -> dict[str, Any]:
        """vLLM's tokenizer description (lm-evaluation-harness's remote tokenizer reads it): the
        special tokens as text and id (None where the model has none) and the chat template."""
        return api.tokenizer_info()

    @app.post("/detokenize", openapi_extra=request_body(DetokenizeRequest))
    async def detokenize(request: Request) -> dict[str, Any]:
        req: DetokenizeRequest = parse(await request.body(), DetokenizeRequest)
        api.check_model(req.model)
        vocab = served.tokenizer.get_vocab_size()
        if bad := [t for t in req.tokens if not 0 <= t < vocab]:
            raise ApiError(400, f"tokens must be ids in [0, {vocab}), got {bad[:5]}", "tokens")
        return {"prompt": served.tokenizer.decode(req.tokens, skip_special_tokens=False)}

    @app.post("/v1/chat/completions", openapi_extra=request_body(ChatRequest))
    async def chat_completions(request: Request) -> Response:
        req: ChatRequest = parse(await request.body(), ChatRequest)
        api.check_model(req.model)
        refuse_unsupported(req)
        return await api.chat(request, req)

    @app.post("/v1/responses", openapi_extra=request_body(ResponsesRequest))
    async def responses(request: Request) -> Response:
        """OpenAI's Responses API, stateless: run as a chat request, answered as a response."""
        req: ResponsesRequest = parse(await request.body(), ResponsesRequest)
        api.check_model(req.model)
        try:
            chat = to_chat_request(req)
        except InvalidRequest as e:
            raise ApiError(400, str(e), e.param) from None
        return await api.chat(request, chat, partial(ResponseShape, req, served.name))

    @app.post("/v1/completions", openapi_extra=request_body(CompletionRequest))
    async def completions(request: Request) -> Response:
        req: CompletionRequest = parse(await request.body(), CompletionRequest)
        api.check_model(req.model)
        refuse_unsupported(req)
        if req.suffix:
            raise ApiError(400, "suffix is not supported", "suffix")
        if req.best_of is not None and req.best_of != req.n:
            raise ApiError(400, "best_of must equal n (or be left out)", "best_of")
        prompts = api.tokenize_prompts(req.prompt)
        return await api.generate(request, req, prompts, req.max_tokens, req.logprobs, chat=False,
                                  echo=req.echo)

    install(app, [ChatRequest, CompletionRequest, TokenizeRequest, DetokenizeRequest])
    return Guard(app, api_keys=cfg.api_keys, max_body_bytes=cfg.max_body_bytes)


class _Api:
    """The routes' shared logic: limits, submission, streamed and whole answers."""

    def __init__(self, served: ServedModel, engine: ProcessEngine, cfg: ServerConfig):
        self.served, self.engine, self.cfg = served, engine, cfg
        self.token_text = TokenText(served.tokenizer)
        context = served.max_context
        self.max_prompt = min(cfg.max_prompt_tokens or context, context - 1)
        self.thinks = thinks(cfg.reasoning, served.chat_template.source)
        self.tool_format = tool_format(cfg.tool_parser, served.chat_template.source)
        self.in_flight = 0
        self._budget: SchemaBudget | None = None  # built by the first json_schema request (~1 s)

    async def check_schema_budget(self, response_format: Any, max_tokens: int, param: str) -> None:
        """A 400 when the response format's JSON schema cannot close in ``max_tokens``."""
        if self._budget is None:  # off the event loop: the streams in flight go on meanwhile
            vocab = range(self.served.tokenizer.get_vocab_size())
            self._budget = await asyncio.to_thread(SchemaBudget, [bytes(self.token_text.bytes(i)) for i in vocab])
        try:
            self._budget.refuse_over(response_format, max_tokens, param)
        except InvalidRequest as e:
            raise ApiError(400, str(e), e.param) from None

    def model_card(self, created: int) -> dict[str, Any]:
        return {"id": self.served.name, "object": "model", "created": created, "owned_by": "tenacia",
                "max_model_len": self.served.max_context}

    async def chat(self, request: Request, req: ChatRequest, shape: Callable[..., Any] | None = None) -> Response:
        """A chat request: tools checked, messages rendered, then ``generate``. ``shape``: makes
        the answer's shape (``ResponseShape`` for /v1/responses), else chat.completion's."""
        if req.top_logprobs is not None and not req.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs: true", "top_logprobs")
        try:
            tools, choice = check_tools(req.tools, req.tool_choice, self.served.chat_template.source)
            forced = (tool_grammar(self.tool_format, tools, choice, req.parallel_tool_calls,
                                   self.served.chat_template.source) if tools else None)
        except InvalidRequest as e:
            raise ApiError(400, str(e), e.param) from None
        prompt = self.render_chat(req.messages, tools=tools)
        ids = self.encode(prompt, "messages", add_special_tokens=False)
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        think = partial(ThinkSplitter.for_prompt, prompt) if self.thinks else None
        parser = partial(make_parser, self.tool_format, req.parallel_tool_calls) if tools else None
        return await self.generate(request, req, [ids], max_tokens, logprobs, chat=True, think=think,
                                   tools=parser, grammar=forced, shape=shape)

    def tokenizer_info(self) -> dict[str, Any]:
        tok, template = self.served.tokenizer, self.served.chat_template
        special = dict(template.special_tokens)
        if "eos_token" not in special and self.served.eos_ids:
            special["eos_token"] = tok.id_to_token(min(self.served.eos_ids))
        info: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "vocab_size": tok.get_vocab_size(),
                                "model_max_length": self.served.max_context, "chat_template": template.source}
        for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
            text = special.get(name)
            info[name], info[f"{name}_id"] = text, tok.token_to_id(text) if text else None
        return info

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.served.name:
            raise ApiError(404, f"the model '{name}' does not exist; this server serves '{self.served.name}'",
                           "model", "model_not_found")

    def render_chat(self, messages: list, add_generation_prompt: bool = True, tools: list | None = None) -> str:
        try:
            return self.served.chat_template.render([m.model_dump() for m in messages], add_generation_prompt, tools)
        except InvalidRequest as e:
            raise ApiError(400, str(e), e.param) from None

    def tokenize_prompts(self, prompt: str | list[str] | list[int] | list[list[int]]) -> list[list[int]]:
        if isinstance(prompt, str):
            prompt = [prompt]
        if not prompt:
            raise ApiError(400, "prompt must not be empty", "prompt")
        if all(isinstance(p, int) for p in prompt):  # token ids, scored as given: nothing added
            prompt = [prompt]
        if len(prompt) > MAX_PROMPTS:
            raise ApiError(400, f"at most {MAX_PROMPTS} prompts per request, got {len(prompt)}", "prompt")
        return [self.encode(p, "prompt") if isinstance(p, str) else list(p) for p in prompt]

    def encode(self, text: str, param: str, add_special_tokens: bool = True) -> list[int]:
        try:
            text.encode("utf-8")  # a lone surrogate ("\ud800") is valid JSON but not text
        except UnicodeEncodeError as e:
            raise ApiError(400, f"{param} is not valid Unicode text ({e.reason})", param) from None
        return self.served.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    async def generate(self, request: Request, req: ChatRequest | CompletionRequest, prompts: list[list[int]],
                       max_tokens: int | None, logprobs: int | None, chat: bool, echo: bool = False,
                       think: Callable[[], ThinkSplitter] | None = None,
                       tools: Callable[[], ToolCallParser] | None = None, grammar: str | None = None,
                       shape: Callable[..., Any] | None = None) -> Response:
        """Submit ``prompts`` and answer, whole or streamed. ``echo``: each completion starts with
        its prompt (scored when ``logprobs`` is given). ``think``: a splitter per choice, to send
        a thinking model's reasoning apart from its content (``reasoning.py``); ``tools``: a tool-call
        parser per choice (``tools/``); ``grammar``: one the output must follow (a forced call)."""
        param = "messages" if chat else "prompt"
        longest = max(len(p) for p in prompts)
        if any(not p for p in prompts):
            raise ApiError(400, f"{param} encodes to no tokens", param)
        if longest > self.max_prompt:
            raise ApiError(400, f"the prompt has {longest} tokens; this server takes at most {self.max_prompt}", param)
        limit = self.cfg.max_tokens_limit
        if max_tokens is None:
            max_tokens = min(limit, self.served.max_context - longest)
        elif max_tokens > limit:
            raise ApiError(400, f"max_tokens must be at most {limit}, got {max_tokens}", "max_tokens")
        elif max_tokens == 0 and not echo:
            raise ApiError(400, "max_tokens may be 0 only with echo: true (to score the prompt)", "max_tokens")
        if req.stream_options is not None and not req.stream:
            raise ApiError(400, "stream_options is only allowed with stream: true", "stream_options")
        params = sampling_params(req, max_tokens, logprobs, logprobs if echo else None, grammar)
        if params.grammar is not None and grammar is None:
            await self.check_schema_budget(req.response_format, max_tokens,
                                     "max_output_tokens" if shape is not None else "max_tokens")
        if self.in_flight >= self.cfg.max_concurrent_requests:
            raise ApiError(429, f"the server is at its limit of {self.cfg.max_concurrent_requests} "
                           "requests in flight; retry later", None, "rate_limit_exceeded")
        try:
            handle = self.engine.submit(prompts, params)
        except InvalidRequest as e:
            raise ApiError(400, str(e), e.param) from None
        except EngineError as e:  # the engine process is gone: nothing here can serve it
            raise ApiError(503, str(e), None, "engine_unavailable") from None
        self.in_flight += 1
        shape = (shape(self.token_text) if shape is not None else
                 Shape(chat, self.served.name, self.token_text, logprobs is not None, prompts if echo else None, req.n))
        got = Collected(prompt_tokens=sum(len(p) for p in prompts), think=think, tools=tools)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)

            def close() -> None:
                handle.cancel()
                self.in_flight -= 1

            return _EventStream(self._stream(handle, shape, got, include_usage, len(prompts) * req.n), close)
        try:
            return await self._whole(request, handle, shape, got)
        finally:
            handle.cancel()
            self.in_flight -= 1

    async def _whole(self, request: Request, handle: RequestHandle, shape: Shape, got: Collected) -> Response:
        async def collect() -> None:
            async for deltas in handle.deltas():
                got.add(deltas)

        work = asyncio.ensure_future(collect())
        gone = asyncio.ensure_future(_disconnected(request))
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not work.done():  # the client left: stop generating for nobody
            work.cancel()
            return Response(status_code=499)
        try:
            work.result()
        except EngineError as e:
            return JSONResponse(error_body(500, str(e)), status_code=500)
        return JSONResponse(shape.response(got))

    async def _stream(self, handle: RequestHandle, shape: Shape, got: Collected, include_usage: bool, choices: int):
        offsets: dict[int, int] = {}
        try:
            opening = shape.start(range(choices), include_usage)
            if opening and not shape.opening_waits_for_first_token:
                yield opening
                opening = ""
            async for deltas in handle.deltas():
                chunk = shape.chunk(deltas, include_usage, offsets, got.add(deltas))
                if chunk:
                    yield opening + chunk
                    opening = ""
            yield opening + shape.end(got, include_usage)
        except EngineError as e:
            yield shape.error(error_body(500, str(e)))
        finally:
            handle.cancel()


class _EventStream(StreamingResponse):
    """A server-sent-event response that runs ``on_close`` exactly once however it ends, even
    when the client is gone before the first event (the generator's own ``finally`` would then
    never run)."""

    def __init__(self, events, on_close):
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


async def _disconnected(request: Request) -> None:
    """Return when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
