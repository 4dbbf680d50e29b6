"""
toxiproxy's HTTP API over twisted.web, so that toxiproxy's own clients
(C{toxiproxy-python}, C{toxiproxy-node-client}, Testcontainers' modules) and
C{curl} scripts drive echoapp-proxy unchanged: the same paths, JSON shapes
and status codes, compared call by call with toxiproxy in the tests.

Where toxiproxy half-applies or crashes, this does neither: every request is
checked whole before anything changes (L{echoapp._proxy.schema}), a batch is
all or nothing (L{Proxies.populate}), a body over L{MAX_BODY} is refused
before it is read, and any error is one JSON line with toxiproxy's status.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from echoapp import __version__
from echoapp._limits.descriptors import DESCRIPTORS
from echoapp._proxy.errors import CannotListen, Exists, Invalid, NotFound, ProxyError
from echoapp._proxy.registry import AnyProxy, Proxies, ignored_line
from echoapp._proxy.schema import batch_from_json, spec_from_json, toxic_from_json
from echoapp._proxy.toxics import Toxic, toxic_json, toxics_json
from echoapp._transports.listen import StreamListenService

MAX_BODY = 256 * 1024  # bytes: a populate of hundreds of proxies fits
MAX_API_CONNECTIONS = 64
TOO_LARGE = (
    b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b'Content-Length: 60\r\n\r\n{"error":"request body over 262144 bytes","status":413}    \n'
)

log = Logger(namespace="echoapp.proxy.api")

# The proxies' refusals as toxiproxy's statuses: the one place that knows HTTP.
STATUS: dict[type[ProxyError], int] = {Invalid: 400, NotFound: 404, Exists: 409, CannotListen: 500}


def status_of(error: ProxyError) -> int:
    """toxiproxy's HTTP status for a refusal (500 for one it would not expect)."""
    for kind, status in STATUS.items():
        if isinstance(error, kind):
            return status
    return 500


class ApiRequest(Request):
    """A request whose body stops being kept past L{MAX_BODY}: a chunked flood is cut, not spooled."""

    _received = 0

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > MAX_BODY:
            transport: Any = self.channel.transport if self.channel is not None else None
            if transport is not None:
                transport.write(TOO_LARGE)
                transport.loseConnection()
            return
        super().handleContentChunk(data)


class ApiChannel(HTTPChannel):
    """A declared body over L{MAX_BODY} is answered 413 before any of it is read."""

    def headerReceived(self, line: bytes) -> bool:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            if int(value.strip()) > MAX_BODY:
                transport: Any = self.transport
                transport.write(TOO_LARGE)
                transport.loseConnection()
                return False
        return bool(super().headerReceived(line))

    def connectionMade(self) -> None:
        DESCRIPTORS.open += 1
        super().connectionMade()

    def connectionLost(self, reason: Any = None) -> None:
        DESCRIPTORS.open -= 1
        super().connectionLost(reason)


class NoRoute(Exception):
    """A path toxiproxy does not serve: its router's plain 404."""


class MethodNotAllowed(Exception):
    """A path toxiproxy serves, with another method."""


class ToxiproxyResource(Resource):
    """Every path of toxiproxy's API, routed by hand as its router does (a leaf: no child lookups)."""

    isLeaf = True

    def __init__(self, proxies: Proxies) -> None:
        super().__init__()
        self.proxies = proxies

    def render(self, request: Request) -> bytes:
        method = (request.method or b"GET").decode("ascii", "replace")
        parts = [part.decode("utf-8", "replace") for part in request.postpath or []]
        if parts and parts[-1] == "" and len(parts) > 1:
            parts.pop()
        try:
            status, answer = self.route(method, parts, request)
        except ProxyError as error:
            status = status_of(error)
            answer = {"error": str(error), "status": status}
            if parts == ["populate"]:
                answer["proxies"] = None
        except NoRoute:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"404 page not found\n"
        except MethodNotAllowed:
            request.setResponseCode(405)
            return b""
        except Exception:
            log.failure("The API failed on {method} {path}", method=method, path="/".join(parts))
            status, answer = 500, {"error": "internal error (logged)", "status": 500}
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        settled = self.proxies.settled()
        settled.addCallback(lambda _: gone or self._answer(request, status, answer))
        settled.addErrback(lambda failure: log.failure("Answering {path}", failure, path="/".join(parts)))
        return NOT_DONE_YET  # type: ignore[return-value]

    @staticmethod
    def _answer(request: Request, status: int, answer: Any) -> None:
        """The answer, once every port a change closed is closed: "disabled" means refused."""
        request.setResponseCode(status)
        if answer is not None:
            request.setHeader(b"content-type", b"application/json")
            request.write(json.dumps(answer, separators=(",", ":")).encode())
        request.finish()

    def route(self, method: str, parts: list[str], request: Request) -> tuple[int, Any]:
        """
        One request to toxiproxy's API: the status code and the JSON
        toxiproxy answers; a mistake is a L{ProxyError}, which L{status_of}
        maps to toxiproxy's status.
        """
        proxies = self.proxies
        if parts == ["version"]:
            self._only(method, "GET")
            return 200, {"version": f"echoapp-{__version__}"}
        if parts == ["reset"]:
            self._only(method, "POST")
            proxies.reset()
            return 204, None
        if parts == ["populate"]:
            self._only(method, "POST")
            made = proxies.populate(batch_from_json(self._body(request)))
            return 201, {"proxies": [proxy.as_json() for proxy in made]}
        if parts == ["proxies"]:
            self._only(method, "GET", "POST")
            if method == "GET":
                return 200, {name: proxy.as_json() for name, proxy in sorted(proxies.proxies.items())}
            spec = spec_from_json(self._body(request))
            return 201, proxies.add(proxies.make(spec)).as_json()
        if len(parts) == 2 and parts[0] == "proxies":
            self._only(method, "GET", "POST", "DELETE")
            proxy = proxies.get(parts[1])
            if method == "GET":
                return 200, proxy.as_json()
            if method == "DELETE":
                proxies.remove(proxy.name)
                return 204, None
            return 200, self._update(proxy, self._body(request)).as_json()
        if len(parts) in (3, 4) and parts[0] == "proxies" and parts[2] == "toxics":
            return self._toxics(method, proxies.get(parts[1]), parts[3:], request)
        raise NoRoute()

    def _toxics(self, method: str, proxy: AnyProxy, rest: list[str], request: Request) -> tuple[int, Any]:
        toxics = proxy.faults.toxics
        if not rest:
            self._only(method, "GET", "POST")
            if method == "GET":
                return 200, toxics_json(proxy.faults)
            toxic = toxic_from_json(self._body(request))
            if toxic.name in toxics:
                raise Exists("toxic already exists")
            proxy.check_toxic(toxic)
            proxy.faults.set(toxic)
            self._ignored(request, proxy, toxic)
            return 200, toxic_json(toxic)
        self._only(method, "GET", "POST", "DELETE")
        existing = toxics.get(rest[0])
        if existing is None:
            raise NotFound("toxic not found")
        if method == "GET":
            return 200, toxic_json(existing)
        if method == "DELETE":
            proxy.faults.remove(existing.name)
            return 204, None
        toxic = toxic_from_json(self._body(request), existing)
        proxy.check_toxic(toxic)
        proxy.faults.set(toxic)
        self._ignored(request, proxy, toxic)
        return 200, toxic_json(toxic)

    @staticmethod
    def _ignored(request: Request, proxy: AnyProxy, toxic: Toxic) -> None:
        """
        Attributes the toxic's type does not have: left out with toxiproxy's
        200, and said in one line (a header, and the log) so a typo is seen.
        """
        if toxic.ignored:
            line = ignored_line(proxy.name, toxic)
            request.setHeader(b"x-echoapp-ignored", line.encode("ascii", "backslashreplace"))
            log.warn("{line}", line=line)

    def _update(self, proxy: AnyProxy, data: Any) -> AnyProxy:
        """toxiproxy's update: C{enabled}, C{listen}, C{upstream}; all checked before any applies."""
        spec = spec_from_json(data, proxy.spec)
        spec.name = proxy.name
        return self.proxies.update(proxy, spec)

    @staticmethod
    def _only(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise MethodNotAllowed()

    @staticmethod
    def _body(request: Request) -> Any:
        content = request.content
        text = content.read() if content is not None else b""
        try:
            return json.loads(text or b"null")
        except ValueError as error:
            raise Invalid(f"bad request body: {error}") from None


class ApiSite(Site):
    """The API's site: HTTP/1.1 only, bounded bodies, at most L{MAX_API_CONNECTIONS} connections."""

    noisy = False
    protocol = ApiChannel  # type: ignore[assignment]
    requestFactory = ApiRequest
    live = 0

    def buildProtocol(self, addr: Any) -> Any:
        if DESCRIPTORS.full():
            return None
        return super().buildProtocol(addr)


def api_service(proxies: Proxies, listen: str, reactor: Any = None) -> StreamListenService:
    """toxiproxy's API for C{proxies} on the endpoint C{listen}."""
    return StreamListenService(listen, ApiSite(ToxiproxyResource(proxies)), reactor)
