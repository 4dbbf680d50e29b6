"""
twistd plugin echoapp-compose: several installed twistd plugins, ours or
anyone's, in one process, each configured by its own C{Options}.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from twisted.application.service import IService, IServiceMaker, MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.python.reflect import namedModule

from echoapp._tap.common import (
    METRICS_PARAMETERS,
    PluginOptions,
    metrics_listen,
    process_service,
    switch_for_the_process,
)
from echoapp._transports.endpoints import one_line
from echoapp._twisted import global_reactor


def _makers() -> dict[str, IServiceMaker]:
    return {maker.tapname: maker for maker in getPlugins(IServiceMaker)}


def parse_service(spec: str, makers: dict[str, IServiceMaker]) -> tuple[IServiceMaker, usage.Options]:
    """
    Parse C{"PLUGIN [OPTIONS]"} with the plugin's own options parser.

    @raise usage.UsageError: one line naming the offending C{--service},
        also when a plugin's options raise something else (a bug in it).
    """

    def invalid(reason: str) -> usage.UsageError:
        return usage.UsageError(f"--service {spec!r}: {reason}")

    try:
        words = shlex.split(spec)
    except ValueError as error:
        raise invalid(str(error)) from None
    if not words:
        raise invalid("empty; expected a plugin name and its options")
    name, arguments = words[0], words[1:]
    maker = makers.get(name)
    if maker is None:
        raise invalid(f"no twistd plugin named {name!r} (twistd --help lists them)")
    try:
        options = maker.options()
        options.parseOptions(arguments)
    except usage.UsageError as error:
        raise invalid(str(error)) from None
    except Exception as error:  # someone else's plugin failing: one line, not 29 of traceback
        raise invalid(f"{name} failed: {one_line(error)}") from None
    return maker, options


class Options(PluginOptions):
    """
    C{echoapp-compose}: a C{--service} per plugin, each parsed by that
    plugin's own options.
    """

    synopsis = '--service "PLUGIN [OPTIONS]" [--service ...]'
    longdesc = (
        "Runs several installed twistd plugins in one process. Each --service is a plugin name "
        "followed by that plugin's own options, quoted as one argument."
    )
    optParameters = METRICS_PARAMETERS

    def opt_service(self, spec: str) -> None:
        """A plugin and its options, e.g. "echoapp-tcp --listen tcp:9999"; repeatable."""
        self.setdefault("specs", []).append(spec)

    def postOptions(self) -> None:
        self["metrics-listen"] = metrics_listen(self)
        specs = self.get("specs", [])
        if not specs:
            raise usage.UsageError('give at least one --service "PLUGIN [OPTIONS]"')
        makers = _makers()
        self["services"] = [(spec, *parse_service(spec, makers)) for spec in specs]


def bare_tree(maker: IServiceMaker) -> Callable[[usage.Options, IReactorTime | None], IService] | None:
    """
    An echoapp plugin's C{service_tree}: its services without the parts that
    exist once per process (signals, the metrics listener), which compose
    adds once around everything.  L{None} for anyone else's plugin.
    """
    module = getattr(maker, "module", None)
    if not isinstance(module, str) or not module.startswith(f"{__package__}."):
        return None
    tree: Callable[[usage.Options, IReactorTime | None], IService] | None = getattr(
        namedModule(module), "service_tree", None
    )
    return tree


def make_one(
    spec: str, maker: IServiceMaker, options: usage.Options, reactor: IReactorTime | None = None
) -> IService:
    """
    One plugin's service.  A plugin that fails here is someone else's code
    failing: one line naming the C{--service} and the error, exit status 1
    (twistd calls C{makeService} before it logs or daemonizes, so the line
    reaches the terminal).
    """
    tree = bare_tree(maker)
    if tree is not None and options.get("metrics-listen") is not None:
        raise SystemExit(
            f"--service {spec!r}: one metrics listener per process: give --metrics to echoapp-compose"
        )
    try:
        if tree is not None:
            switch_for_the_process(options)
            service = tree(options, reactor)
        else:
            service = maker.makeService(options)
    except Exception as error:
        raise SystemExit(f"--service {spec!r}: {maker.tapname} failed: {one_line(error)}") from None
    if not IService.providedBy(service):
        raise SystemExit(f"--service {spec!r}: {maker.tapname} made no service (got {service!r})")
    return service


def makeService(options: usage.Options) -> IService:
    """
    Every plugin's service under one parent.  The same plugin twice (two
    greeters with different banners, a real use) gives two services of one
    name, which a MultiService refuses: the second is named C{NAME-2}.
    """
    composed = MultiService()
    reactor: IReactorTime = global_reactor()  # taken once, as each plugin's own makeService takes it
    chosen: list[tuple[str, IServiceMaker, Any]] = options["services"]
    taken: set[str] = set()
    for spec, maker, plugin_options in chosen:
        service = make_one(spec, maker, plugin_options, reactor)
        name = service.name
        if name is not None and name in taken:
            number = 2
            while f"{name}-{number}" in taken:
                number += 1
            name = f"{name}-{number}"
            service.setName(name)
        if name is not None:
            taken.add(name)
        service.setServiceParent(composed)
    return process_service(composed, options, reactor)
