"""The served engines' HTTP client: JSON over HTTP/1.1 through one aiohttp session whose
keep-alive connection pool holds at most `max_connections` connections, with retries
(exponential back-off with jitter, ``Retry-After`` honoured), a deadline on each attempt as
a whole, and error texts without the API key.

The session lives on an event loop in a background thread that the client owns: started on
the first request, stopped by :meth:`HTTPClient.close`, when the client is garbage
collected, or at interpreter exit (``weakref.finalize``), and started afresh in a forked
child (a loop cannot cross a fork). Callers stay synchronous: :meth:`HTTPClient.request`
for one call, :meth:`HTTPClient.submit` to run a whole coroutine (the openai engine's block
of rows) on the loop.

Proxies come from the environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``), as urllib
and aiohttp's ``trust_env`` read them, looked up once per URL: ``trust_env`` would look them
up (and ``~/.netrc``) on a worker thread for every request, and its netrc credentials would
clash with the bearer header.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import json
import os
import random
import selectors
import socket
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import aiohttp
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

#: statuses worth asking again: throttling, timeouts, overloaded or restarting servers
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: what stands in an error text for a credential the server echoed back
REDACTED = "[REDACTED]"
#: shorter keys (local servers' placeholders: "x", "abc") are redacted only inside their
#: ``Authorization`` value: erasing every such letter run would garble the message
MIN_REDACTED_KEY = 4
#: idle pooled connections are dropped after this many seconds: below uvicorn's 5 s (vLLM,
#: SGLang), so the client lets a connection go before the server closes it under a request
KEEPALIVE_S = 4.0
#: how long close() waits for the session to close and the loop thread to end
CLOSE_WAIT_S = 10.0

T = TypeVar("T")


def decode_json(answer: bytes) -> Any:
    """A JSON answer, decoded by orjson (a served model's answer with per-token log
    probabilities decodes about 3x faster than with json); what orjson refuses and json
    takes (NaN or Infinity literals, lone surrogates) goes to json, so the value is
    json.loads's; integers past 64 bits, which no served answer holds, come back floats."""
    try:
        return orjson.loads(answer)
    except orjson.JSONDecodeError:
        return json.loads(answer)


class HTTPStatusError(RuntimeError):
    def __init__(self, url: str, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {detail}")
        self.url, self.status, self.detail = url, status, detail


class ConnectionFailure(RuntimeError):
    pass


class RequestTimeout(ConnectionFailure):
    """No complete answer within the request's whole time limit."""


def retry_after_seconds(header: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (None: absent / unreadable)."""
    if not header:
        return None
    try:
        return max(float(header), 0.0)
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(moment.timestamp() - time.time(), 0.0)


def failure_reason(exc: BaseException) -> str:
    """Why a connection failed, as urllib said it (``[Errno 111] Connection refused``,
    ``[Errno -2] Name or service not known``) where the system said why, else the error."""
    os_error = getattr(exc, "os_error", None)  # aiohttp.ClientConnectorError's cause
    if isinstance(os_error, OSError) and os_error.errno is not None:
        if isinstance(os_error, socket.gaierror):  # a resolver's code, not an errno
            return f"[Errno {os_error.errno}] {os_error.strerror}"
        return f"[Errno {os_error.errno}] {os.strerror(os_error.errno)}"
    return str(exc) or type(exc).__name__


def env_proxy(url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for `url` and its credentials ((None, None): none)."""
    try:
        return get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None


#: loops and sessions a forked child inherited (_LoopThread._start)
_INHERITED: list[tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession | None]] = []


class _LoopThread:
    """An event loop on a daemon thread with one aiohttp session and the in-flight bound.
    It holds no reference to its client, so the client can be collected and finalized."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.session: aiohttp.ClientSession | None = None
        self.slots: asyncio.Semaphore | None = None
        self.pid: int | None = None

    def started(self) -> asyncio.AbstractEventLoop:
        with self.lock:
            if self.loop is None or self.pid != os.getpid():
                self._start()
            assert self.loop is not None
            return self.loop

    def _start(self) -> None:
        if self.loop is not None:  # a forked child: the parent's thread is gone here
            # kept, so that their destructors never close the parent's connections
            _INHERITED.append((self.loop, self.session))
        # poll(2), not epoll: an epoll instance is shared with forked children, and a child
        # dropping a socket from it would drop it from the parent's loop too
        loop = asyncio.SelectorEventLoop(selectors.PollSelector())
        thread = threading.Thread(target=loop.run_forever, name="nova-eval-http", daemon=True)
        thread.start()
        self.loop, self.thread, self.pid = loop, thread, os.getpid()
        asyncio.run_coroutine_threadsafe(self._open(), loop).result()

    async def _open(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections, limit_per_host=0, keepalive_timeout=KEEPALIVE_S
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            # the deadline is asyncio.timeout around each attempt (HTTPClient._attempt)
            timeout=aiohttp.ClientTimeout(total=None),
            cookie_jar=aiohttp.DummyCookieJar(),  # no cookies, as urllib kept none
        )
        self.slots = asyncio.Semaphore(self.max_connections)

    def stop(self) -> None:
        """Close the session and end the thread (idempotent; in a forked child, the copies
        of the parent's are only put aside)."""
        with self.lock:
            loop, thread, session = self.loop, self.thread, self.session
            self.loop = self.thread = self.session = self.slots = None
            if loop is not None and self.pid != os.getpid():
                _INHERITED.append((loop, session))  # as _start does
                return
            if loop is None or not loop.is_running():
                return
            if thread is threading.current_thread():  # collected on the loop itself
                loop.call_soon(loop.stop)
                return
            if session is not None:
                closing = asyncio.run_coroutine_threadsafe(session.close(), loop)
                # a session that will not close in time: the process is going anyway
                with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                    closing.result(CLOSE_WAIT_S)
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(CLOSE_WAIT_S)
            if not loop.is_running():
                loop.close()


class HTTPClient:
    """JSON over HTTP with retries: exponential back-off with jitter, ``Retry-After`` honoured.

    Jitter spreads the retries of many concurrent requests (and of many replicas) so that a
    throttled server is not hit by all of them again at the same instant. At most
    `max_connections` attempts are in flight at once, over as many pooled connections.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 60.0,
        max_connections: int = 8,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.random = random.Random()
        self._sent_headers: dict[str, str] | None = None  # headers(), built on first use
        self._proxies: dict[str, tuple[URL | None, aiohttp.BasicAuth | None]] = {}
        self._runtime = _LoopThread(max_connections)
        self._finalizer = weakref.finalize(self, self._runtime.stop)

    @property
    def max_connections(self) -> int:
        return self._runtime.max_connections

    def headers(self) -> dict[str, str]:
        """What every request sends (a subclass may add to it: preflight's MLflow auth)."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def redact(self, text: str) -> str:
        """`text` without the credentials this client sends (a proxy may echo the request's
        headers in its error body): the ``Authorization`` value, and the key on its own."""
        secrets = [v for k, v in self.headers().items() if k.lower() == "authorization"]
        if self.api_key and len(self.api_key) >= MIN_REDACTED_KEY:
            secrets.append(self.api_key)
        for secret in sorted(secrets, key=len, reverse=True):  # "Bearer <key>" before <key>
            text = text.replace(secret, REDACTED)
        return text

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:  # the server said when; add a little jitter on top
            return min(retry_after, self.max_backoff_s) + self.random.uniform(0, self.backoff_s)
        return min(self.backoff_s * 2**attempt * self.random.uniform(0.5, 1.5), self.max_backoff_s)

    # ------------------------------------------------------------------ the loop

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run `coroutine` on the client's loop (started if need be); its future."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._runtime.started())

    def close(self) -> None:
        """Close the connections and end the loop's thread; a later request starts them
        again."""
        self._runtime.stop()

    # ------------------------------------------------------------------ requests

    def request(
        self,
        url: str,
        body: dict | None = None,
        timeout_s: float | None = None,
        give_up: Callable[[int, str], bool] | None = None,
    ) -> Any:
        """:meth:`request_async` from synchronous code."""
        future = self.submit(self.request_async(url, body, timeout_s, give_up))
        try:
            return future.result()
        except BaseException:
            future.cancel()  # interrupted: the attempt in flight is dropped
            raise

    async def request_async(
        self,
        url: str,
        body: dict | None = None,
        timeout_s: float | None = None,
        give_up: Callable[[int, str], bool] | None = None,
    ) -> Any:
        """GET (no body) or POST a JSON body; the decoded JSON answer. Raises
        :class:`HTTPStatusError` or :class:`ConnectionFailure` (:class:`RequestTimeout`) once
        retries are spent, or at once for an error answer ``give_up(status, detail)`` is true
        of (no retry fixes it). Each attempt has `timeout_s` in all; error texts are redacted
        (:meth:`redact`). Runs on the client's loop (:meth:`submit`)."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        limit = timeout_s or self.timeout_s
        attempt = 0
        while True:
            try:
                status, answer, retry_after = await self._attempt(url, data, limit)
            except (ConnectionFailure, aiohttp.ClientError, OSError) as exc:
                # refused / reset connections, timeouts, a server that hung up mid-answer
                if attempt >= self.max_retries or isinstance(exc, aiohttp.InvalidURL):
                    if isinstance(exc, ConnectionFailure):
                        raise exc from None
                    reason = self.redact(failure_reason(exc))
                    raise ConnectionFailure(f"cannot reach {url}: {reason}") from None
                wait_s = self.delay(attempt, None)
            else:
                if status < 300:
                    return decode_json(answer)
                # redacted before it is cut: a key across the cut would leave its first part
                detail = self.redact(answer.decode("utf-8", "replace"))[:500]
                if (
                    status not in RETRY_STATUS
                    or attempt >= self.max_retries
                    or (give_up is not None and give_up(status, detail))
                ):
                    raise HTTPStatusError(url, status, detail)
                wait_s = self.delay(attempt, retry_after_seconds(retry_after))
            attempt += 1
            await asyncio.sleep(wait_s)

    async def _attempt(
        self, url: str, data: bytes | None, timeout_s: float
    ) -> tuple[int, bytes, str | None]:
        """One try: (status, body, ``Retry-After``), all of it within `timeout_s` (connect,
        send, headers and body: a server dripping its answer cannot hold it longer)."""
        runtime = self._runtime
        session, slots = runtime.session, runtime.slots
        assert session is not None and slots is not None, "submit() starts the loop first"
        proxy = self._proxies.get(url)
        if proxy is None:
            proxy = self._proxies[url] = env_proxy(url)
        headers = self._sent_headers
        if headers is None:
            headers = self._sent_headers = self.headers()
        async with slots:  # waiting for a slot is not part of the attempt's time
            deadline = asyncio.timeout(timeout_s)
            try:
                async with (
                    deadline,
                    session.request(
                        "GET" if data is None else "POST",
                        url,
                        data=data,
                        headers=headers,
                        proxy=proxy[0],
                        proxy_auth=proxy[1],
                    ) as response,
                ):
                    answer = await response.read()
                    return response.status, answer, response.headers.get("Retry-After")
            except TimeoutError:
                if not deadline.expired():  # a timeout of the socket's own: a connection error
                    raise
                raise RequestTimeout(
                    f"timed out after {timeout_s:g} s without a complete answer from {url} "
                    "(the limit covers connect, send, headers and body)"
                ) from None


__all__ = [
    "KEEPALIVE_S",
    "MIN_REDACTED_KEY",
    "REDACTED",
    "RETRY_STATUS",
    "ConnectionFailure",
    "HTTPClient",
    "HTTPStatusError",
    "RequestTimeout",
    "env_proxy",
    "failure_reason",
    "retry_after_seconds",
]
