"""
toxiproxy's HTTP API over twisted.web, so that toxiproxy's own clients
(its Ruby and Go clients and C{toxiproxy-cli}, C{toxiproxy-python},
C{toxiproxy-node-client}, Testcontainers' modules) and C{curl} scripts
drive echoapp-proxy unchanged: the same paths and methods (PATCH too), JSON
shapes, headers, status codes and, where a client reads them, error texts,
compared call by call with toxiproxy in the tests.

Where toxiproxy crashes, this does not: every request is checked whole
before anything changes (L{echoapp._proxy.schema}; a populate and a reset,
which go through the proxies in turn, keep what they did before a proxy
that failed, as toxiproxy's do: L{Proxies.populate}), a body over
L{MAX_BODY} is refused before it is read, and any error is one JSON line
with toxiproxy's status.
The port is an L{echoapp._http.BoundedSite}, as the metrics port is: idle
or slow clients cannot hold it, nor take the descriptors proxied clients
need, and the operator's own call gets through while they try.
"""

from __future__ import annotations

import json
import os
from base64 import b32hexencode
from collections.abc import Iterator
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from echoapp import __version__
from echoapp._http import BoundedSite, SiteLimits, payload_too_large
from echoapp._proxy.addresses import same_listen
from echoapp._proxy.errors import (
    CannotListen,
    Exists,
    Invalid,
    NoRoom,
    NotAllowed,
    NotFound,
    PopulateFailed,
    ProxyError,
)
from echoapp._proxy.named import check_proxy, ignored_line, printable
from echoapp._proxy.registry import AnyProxy, Proxies
from echoapp._proxy.schema import ProxySpec, checking_batch, parse_json, spec_from_json, toxic_from_json
from echoapp._proxy.toxics import Toxic, toxic_json, toxics_json
from echoapp._proxy.trust import Allowance
from echoapp._record.serve import served_in_turns
from echoapp._transports.listen import StreamListenService

MAX_BODY = 256 * 1024  # bytes: a populate of hundreds of proxies fits
MAX_API_CONNECTIONS = 64
# The API port's bounds: a test suite's client or an operator, not the
# public.  Past the cap, the probe slots take any one call (the operator's
# DELETE as well as GET /version), and a newcomer displaces a connection
# that has waited a second for its request.
API_LIMITS = SiteLimits(
    max_connections=MAX_API_CONNECTIONS, probe_slots=4, max_requests=100, head_timeout=10.0, max_body=MAX_BODY
)
# The toxiproxy release whose API this one is: clients compare it (the Ruby
# client uses PATCH from 2.6.0 on).  echoapp's own is in X-Echoapp-Version.
TOXIPROXY_VERSION = "2.12.0"
JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
ENDPOINT_TYPES = ("tcp", "tcp6", "udp", "unix", "ssl", "tls", "haproxy", "systemd")

log = Logger(namespace="echoapp.proxy.api")

# The proxies' refusals as toxiproxy's statuses: the one place that knows HTTP.
STATUS: dict[type[ProxyError], int] = {Invalid: 400, NotFound: 404, Exists: 409, CannotListen: 500}


def status_of(error: ProxyError) -> int:
    """toxiproxy's HTTP status for a refusal (500 for one it would not expect)."""
    if isinstance(error, PopulateFailed):
        error = error.cause
    for kind, status in STATUS.items():
        if isinstance(error, kind):
            return status
    return 500


def toxiproxy_words(error: ProxyError, listens: list[str]) -> str:
    """
    A refusal in toxiproxy's words where a client reads them (Go's
    C{net.Listen} errors: its Go client's tests check the bind conflict's),
    else echoapp's one line.  C{listens} are the addresses the request asked
    for, as given.
    """
    text = str(error)
    if not isinstance(error, CannotListen) or isinstance(error, NotAllowed | NoRoom):
        return text  # not a bind's error: echoapp's own line
    quoted = [listen for listen in listens if repr(listen) in text]
    candidates = quoted or listens
    if len(candidates) != 1 or not host_and_port(candidates[0]):
        return text
    [listen] = candidates
    _, colon, port = listen.rpartition(":")
    if "already in use" in text.lower():
        return f"listen tcp {listen}: bind: address already in use"
    if not colon:
        return f"listen tcp: address {listen}: missing port in address"
    if not port.isdigit() or int(port) > 65535:
        return f"listen tcp: address {port}: invalid port"
    return text


def host_and_port(listen: str) -> bool:
    """C{listen} is toxiproxy's C{HOST:PORT} (or a mistake in it), not one of echoapp's endpoint strings."""
    if "=" in listen or listen.partition(":")[0] in ENDPOINT_TYPES:
        return False
    return listen.startswith("[") or listen.count(":") <= 1


def request_id() -> bytes:
    """An id per request, shaped as toxiproxy's (20 characters of base32hex), for its header."""
    return b32hexencode(os.urandom(12)).rstrip(b"=").lower()


class Raw(bytes):
    """An answer that is not JSON (the wire record): its content type is set beside it."""


class Encoded(bytes):
    """JSON made already (the listing, in slices): answered as the JSON it spells."""


class NoRoute(Exception):
    """A path toxiproxy does not serve: its router's plain 404."""


class MethodNotAllowed(Exception):
    """A path toxiproxy serves, with another method."""


def methods(parts: list[str]) -> tuple[str, ...]:
    """The methods toxiproxy's router takes on a path (none: it serves no such path)."""
    if parts == ["version"]:
        return ("GET",)
    if parts in (["reset"], ["populate"]):
        return ("POST",)
    if parts == ["proxies"]:
        return ("GET", "POST")
    if len(parts) == 2 and parts[0] == "proxies":
        return ("GET", "POST", "PATCH", "DELETE")
    if len(parts) == 3 and parts[0] == "proxies" and parts[2] == "toxics":
        return ("GET", "POST")
    if len(parts) == 4 and parts[0] == "proxies" and parts[2] == "toxics":
        return ("GET", "POST", "PATCH", "DELETE")
    if len(parts) == 3 and parts[0] == "proxies" and parts[2] == "record":
        return ("GET",)  # echoapp's own: the wire record, a path toxiproxy's clients never call
    return ()


class ToxiproxyResource(Resource):
    """Every path of toxiproxy's API, routed by hand as its router does (a leaf: no child lookups)."""

    isLeaf = True

    def __init__(self, proxies: Proxies, allowance: Allowance | None = None) -> None:
        super().__init__()
        self.proxies = proxies
        self.allowance = allowance or Allowance()
        self._queue = DeferredLock()

    def render(self, request: Request) -> bytes:
        method = (request.method or b"GET").decode("ascii", "replace")
        parts = [part.decode("utf-8", "replace") for part in request.postpath or []]
        if parts and parts[-1] == "" and len(parts) > 1:
            parts.pop()
        request.setHeader(b"x-echoapp-version", __version__.encode())
        allowed = methods(parts)
        if not allowed:  # toxiproxy's router answers these before its middleware: no request id
            return self._text(request, 404, b"404 page not found\n")
        if method not in allowed:
            request.setResponseCode(405)
            return b""
        request.setHeader(b"x-toxiproxy-request-id", request_id())
        if (request.getHeader(b"user-agent") or b"").startswith(b"Mozilla/"):
            # toxiproxy's guard: a page in a browser cannot drive the API across sites.
            return self._text(request, 403, b"User agent not allowed\n")
        listens: list[str] = []
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        path = printable("/".join(parts))  # for the log: the names are the client's
        # One request at a time reads or changes the proxies (a populate takes
        # many turns of the reactor): each sees the state the last one left.
        # /version touches none, and answers a readiness probe at once.
        if parts == ["version"]:
            handled = self._handle(method, parts, request, listens)
        else:
            handled = self._queue.run(self._handle, method, parts, request, listens)
        handled.addCallback(self._say, request, gone)
        handled.addErrback(lambda failure: log.failure("Answering {path}", failure, path=path))
        return NOT_DONE_YET  # type: ignore[return-value]

    def _handle(
        self, method: str, parts: list[str], request: Request, listens: list[str]
    ) -> Deferred[tuple[int, Any, bool]]:
        """
        One request: its status and answer (and whether the answer is
        toxiproxy's plain-text refusal), once every port it closed is
        closed, so that "disabled" means refused.
        """
        routed: Deferred[Any] = maybeDeferred(self.route, method, parts, request, listens)
        routed.addCallbacks(lambda said: (*said, False), self._refused, errbackArgs=(method, parts, listens))
        return routed.addCallback(lambda said: self.proxies.settled().addCallback(lambda _: said))

    @staticmethod
    def _refused(
        failure: Failure, method: str, parts: list[str], listens: list[str]
    ) -> tuple[int, Any, bool]:
        """A refusal in toxiproxy's status and words; anything else a 500 with one line (and logged)."""
        if not failure.check(ProxyError):
            path = printable("/".join(parts))
            log.failure("The API failed on {method} {path}", failure, method=method, path=path)
            return 500, _dumps({"error": "internal error (logged)", "status": 500}) + b"\n", True
        error = failure.value
        status = status_of(error)
        answer = {"error": toxiproxy_words(error, listens), "status": status}
        if parts != ["populate"]:
            return status, _dumps(answer) + b"\n", True
        # toxiproxy's populate answers its errors as JSON, with the proxies made before the failure.
        kept = error.kept if isinstance(error, PopulateFailed) else None
        answer["proxies"] = None if kept is None else [proxy.as_json() for proxy in kept]
        return status, answer, False

    def _say(self, said: tuple[int, Any, bool], request: Request, gone: list[bool]) -> None:
        """The answer, to a client still there."""
        status, answer, text = said
        if gone:
            return
        if text:
            request.write(self._text(request, status, answer))
            request.finish()
        else:
            self._answer(request, status, answer)

    @staticmethod
    def _text(request: Request, status: int, body: bytes) -> bytes:
        """An answer as Go's C{http.Error} writes it: toxiproxy's refusals are these."""
        request.setResponseCode(status)
        request.setHeader(b"content-type", TEXT)
        request.setHeader(b"x-content-type-options", b"nosniff")
        return body

    @staticmethod
    def _answer(request: Request, status: int, answer: Any) -> None:
        """The answer, once every port a change closed is closed: "disabled" means refused."""
        request.setResponseCode(status)
        if isinstance(answer, Raw):  # its content type set where it was made
            request.setHeader(b"content-length", b"%d" % len(answer))
            request.write(bytes(answer))
        elif answer is not None:
            body = answer if isinstance(answer, bytes) else _dumps(answer)
            made = isinstance(answer, bytes) and not isinstance(answer, Encoded)
            kind = JSON + b";charset=utf-8" if made else JSON
            request.setHeader(b"content-type", kind)
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
        request.finish()

    def route(self, method: str, parts: list[str], request: Request, listens: list[str]) -> Any:
        """
        One request to toxiproxy's API (path and method already matched):
        the status code and the JSON toxiproxy answers (a Deferred of them
        for a batch, done in slices); a mistake is a L{ProxyError}, which
        L{status_of} maps to toxiproxy's status.
        C{listens} is told the listen addresses asked for, for
        L{toxiproxy_words}.
        """
        proxies = self.proxies
        if parts == ["version"]:
            # Byte for byte as toxiproxy writes it (with its space and newline).
            return 200, f'{{"version": "{TOXIPROXY_VERSION}"}}\n'.encode()
        if parts == ["reset"]:
            return proxies.reset().addCallback(lambda _: (204, None))
        if parts == ["populate"]:
            batch: list[tuple[ProxySpec, list[Toxic]]] = []
            checked = proxies.in_slices(checking_batch(self._body(request), batch))  # all, before any is made
            return checked.addCallback(lambda _: self._populate(batch, listens))
        if parts == ["proxies"]:
            if method == "GET":
                return self._listing()
            spec = spec_from_json(self._body(request))
            listens.append(spec.listen)
            return 201, proxies.add(proxies.make(self._admitted(spec))).as_json()
        if parts[2:] == ["record"]:
            return self._record(proxies.get(parts[1]), request)
        if len(parts) == 2:
            proxy = proxies.get(parts[1])
            if method == "GET":
                return 200, proxy.as_json()
            if method == "DELETE":
                proxies.remove(proxy.proxy_name)
                return 204, None
            return 200, self._update(proxy, self._body(request), listens).as_json()
        return self._toxics(method, proxies.get(parts[1]), parts[3:], request)

    def _populate(self, batch: list[tuple[ProxySpec, list[Toxic]]], listens: list[str]) -> Deferred[Any]:
        """A populate's proxies, its body checked: made (or kept) in slices, as toxiproxy makes them."""
        listens.extend(spec.listen for spec, _ in batch)
        made = self.proxies.populate(batch, self._admitted)
        return made.addCallback(lambda made: (201, {"proxies": [proxy.as_json() for proxy in made]}))

    def _listing(self) -> Deferred[tuple[int, Any]]:
        """
        Every proxy by name, made in slices of the reactor's time
        (L{Proxies.in_slices}): at the most proxies, made at once, it held
        every other connection for 30-140 ms.
        """
        pieces: list[bytes] = []

        def each() -> Iterator[None]:
            for name, proxy in sorted(self.proxies.proxies.items()):
                pieces.append(_dumps(name) + b":" + _dumps(proxy.as_json()))
                yield None

        made = self.proxies.in_slices(each())
        return made.addCallback(lambda _: (200, Encoded(b"{" + b",".join(pieces) + b"}")))

    def _toxics(self, method: str, proxy: AnyProxy, rest: list[str], request: Request) -> tuple[int, Any]:
        """The toxics of one proxy: every edit is the proxy's own method (L{ProxyService.add_toxic}...)."""
        if not rest:
            if method == "GET":
                return 200, toxics_json(proxy.faults)
            toxic = toxic_from_json(self._body(request))
            proxy.add_toxic(toxic)
            self._ignored(request, proxy, toxic)
            return 200, toxic_json(toxic)
        existing = proxy.toxic(rest[0])
        if method == "GET":
            return 200, toxic_json(existing)
        if method == "DELETE":
            proxy.remove_toxic(existing.name)
            return 204, None
        toxic = toxic_from_json(self._body(request), existing)  # POST and PATCH alike, as toxiproxy
        proxy.replace_toxic(toxic)
        self._ignored(request, proxy, toxic)
        return 200, toxic_json(toxic)

    def _record(self, proxy: AnyProxy, request: Request) -> Deferred[tuple[int, Any]]:
        """A proxy's wire record from memory: its timeline, or with C{?format=pcapng} a capture."""
        recorder = getattr(self.proxies, "recorder", None)
        if recorder is None:
            raise NotFound("no wire record: echoapp-proxy records with --record FILE")
        args: dict[bytes, list[bytes]] = request.args or {}
        kind = args.get(b"format", [b"text"])[-1]
        if kind not in (b"text", b"pcapng"):
            raise Invalid(f"format {kind.decode('ascii', 'replace')[:20]!r}: text or pcapng")

        def answer(made: tuple[str, bytes]) -> tuple[int, Any]:
            request.setHeader(b"content-type", made[0].encode())
            return 200, Raw(made[1])

        return served_in_turns(recorder, proxy, pcapng=kind == b"pcapng").addCallback(answer)

    @staticmethod
    def _ignored(request: Request, proxy: AnyProxy, toxic: Toxic) -> None:
        """
        Attributes the toxic's type does not have: left out with toxiproxy's
        200, and said in one line (a header, and the log) so a typo is seen.
        """
        if toxic.ignored:
            line = ignored_line(proxy.proxy_name, toxic)
            request.setHeader(b"x-echoapp-ignored", line.encode("ascii", "backslashreplace"))
            log.warn("{line}", line=line)

    def _update(self, proxy: AnyProxy, data: Any, listens: list[str]) -> AnyProxy:
        """
        toxiproxy's update (POST, or PATCH since 2.6, the same): C{enabled},
        C{listen}, C{upstream}, each left as it is when absent or null; all
        checked before any applies.
        """
        spec = spec_from_json(data, proxy.spec)
        spec.name = proxy.proxy_name
        listens.append(spec.listen)
        return self.proxies.update(proxy, self._admitted(spec, proxy))

    def _admitted(self, spec: ProxySpec, old: AnyProxy | None = None) -> ProxySpec:
        """
        C{spec} as the API may have it (L{Allowance}): what it changes of
        C{old} (the proxy of its name, if any) checked, after the checks
        toxiproxy makes itself, so a mistake keeps toxiproxy's answer.
        """
        check_proxy(spec)
        if old is None:
            return self.allowance.admit(spec)
        new_listen = not same_listen(old, spec.listen)
        return self.allowance.admit(spec, new_listen, spec.upstream != old.spec.upstream)

    @staticmethod
    def _body(request: Request) -> Any:
        content = request.content
        return parse_json(content.read() if content is not None else b"")


def _dumps(answer: Any) -> bytes:
    return json.dumps(answer, separators=(",", ":")).encode()


class ApiSite(BoundedSite):
    """
    The API's site: a L{BoundedSite} held to L{API_LIMITS}, with no
    C{Server} header (toxiproxy sends none; echoapp's version is in
    C{X-Echoapp-Version}) and toxiproxy's JSON for a body too large.
    """

    server_header = False
    too_large = payload_too_large(JSON, b'{"error":"request body over 262144 bytes","status":413}\n')


def api_service(
    proxies: Proxies,
    listen: str,
    reactor: Any = None,
    limits: SiteLimits = API_LIMITS,
    allowance: Allowance | None = None,
) -> StreamListenService:
    """
    toxiproxy's API for C{proxies} on the endpoint C{listen}; its clients
    may have what C{allowance} allows (by default: proxies where the API
    listens, L{Allowance.of_api}).
    """
    resource = ToxiproxyResource(proxies, allowance or Allowance.of_api(listen))
    return StreamListenService(listen, ApiSite(resource, limits, reactor), reactor)
