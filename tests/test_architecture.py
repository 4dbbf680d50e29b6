"""
The package's shape, checked from its source: imports form a DAG (function-
local imports included, so a cycle cannot hide inside a function) and point
only down the layers, the public API is exactly the pinned list and every
other module is private by name, every public name says why it exists, no
production module uses Twisted's test helpers, Twisted's private names are
reached only through the seam (L{echoapp._twisted}), and no module is too
long to hold in one's head.
"""

from __future__ import annotations

import ast
import configparser
import importlib
import inspect
import os
import re
import shutil
import tempfile
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from twisted.application import service as service_interfaces
from twisted.internet import interfaces as internet_interfaces
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementedBy
from zope.interface.interface import InterfaceClass

import echoapp

PACKAGE_DIR = os.path.dirname(echoapp.__file__)
SEAM = "echoapp._twisted"  # a package: its face and the private modules under it


def in_seam(name: str) -> bool:
    """Is module C{name} the seam, or one of its private modules?"""
    return name == SEAM or name.startswith(SEAM + ".")


MAX_LINES = 400
# Public, documented names that start with an underscore anyway.
DOCUMENTED_UNDERSCORE_NAMES = {"_exit"}  # os._exit
TEST_HELPERS = ("twisted.internet.testing", "twisted.test", "twisted.trial")

# The floors, bottom up: a module imports only from its own floor or lower.
# A module is on the floor of the first prefix it matches (a prefix ending
# in "." holds a whole subpackage).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "values and the seam",
        (
            "echoapp",
            "echoapp._process",
            "echoapp._accelerator",
            "echoapp._mmsg",
            "echoapp._starting",
            "echoapp._twisted",
            "echoapp._twisted.",
            "echoapp._tac",
            "echoapp._reasons",
            "echoapp._framing",
            "echoapp._peers",
            "echoapp.template",
            "echoapp._fields",
            "echoapp.config",
            "echoapp.reactor",
            "echoapp.logs",
        ),
    ),
    ("metrics", ("echoapp._metrics",)),
    ("limits", ("echoapp._limits", "echoapp._limits.")),
    ("record", ("echoapp._record", "echoapp._record.")),
    ("transports", ("echoapp._transports", "echoapp._transports.")),
    ("http", ("echoapp._http",)),
    (
        "protocols and faults",
        ("echoapp._protocols", "echoapp._protocols.", "echoapp._faults", "echoapp._faults."),
    ),
    ("services", ("echoapp.services",)),
    ("proxy", ("echoapp._proxy", "echoapp._proxy.")),
    ("process", ("echoapp._monitor", "echoapp.signals")),
    ("test peer", ("echoapp.testing", "echoapp.testing.")),
    (
        "entry points",
        (
            "echoapp._tap",
            "echoapp._tap.",
            "echoapp._client",
            "echoapp._client.",
            "echoapp._pytest_plugin",
            "echoapp.__main__",
        ),
    ),
]

# The declared public API: module -> its __all__.  Removing or renaming a
# name here is a decision for the changelog, not an accident.
PUBLIC_API: dict[str, set[str]] = {
    "echoapp": {"StartupError", "__version__"},
    "echoapp.config": {"Framing", "GreeterConfig", "MetricsLimits", "TCPLimits", "UDPLimits"},
    "echoapp.template": {"DEFAULT_REPLY", "PLACEHOLDER", "ReplyTemplate", "encode_text"},
    "echoapp.services": {
        "ECHO_NAME",
        "Faults",
        "TCP_NAME",
        "UDP_NAME",
        "StreamListen",
        "UDPListen",
        "echo",
        "everything",
        "named",
        "tcp_greeter",
        "udp_greeter",
    },
    "echoapp.signals": {"SignalService", "handled"},
    "echoapp.logs": {"event_as_json", "json_observer"},
    "echoapp.reactor": {"install"},
    "echoapp.testing": {
        "Connection",
        "Faults",
        "Peer",
        "Process",
        "ProxyPeer",
        "Record",
        "WireEvent",
        "echo",
        "greeter",
        "proxy",
        "udp",
    },
}


def floor_of(module: str) -> int:
    """The index in L{LAYERS} of the floor C{module} stands on."""
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix.endswith(".") and module.startswith(prefix)):
                return index
    raise LookupError(f"{module} stands on no floor: add it to LAYERS")


def package_modules() -> dict[str, str]:
    """Every module of the package: dotted name -> path."""
    found = {}
    for directory, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            parts = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[: -len(".py")].split(os.sep)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported_names(path: str) -> Iterator[tuple[str, str | None, int]]:
    """C{(module, name or None, line)} for every import anywhere in the file, functions included."""
    with open(path, encoding="utf-8") as source:
        tree = ast.parse(source.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                yield node.module, alias.name, node.lineno


def defined_names(tree: ast.AST) -> Iterator[str]:
    """Names a module defines for itself: functions, classes, assigned attributes and names, slots."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield node.name
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            yield node.attr
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            yield node.id
        elif isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__slots__" for target in node.targets
        ):
            for entry in ast.walk(node.value):
                if isinstance(entry, ast.Constant) and isinstance(entry.value, str):
                    yield entry.value


def import_graph(modules: Mapping[str, str]) -> dict[str, set[str]]:
    """Which package modules each package module imports (C{from echoapp import x} names module x)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for module, imported, _ in imported_names(path):
            target = f"{module}.{imported}" if f"{module}.{imported}" in modules else module
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that returns to its start, or None for a DAG."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph.get(node, ())):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done:
                cycle = visit(target)
                if cycle:
                    return cycle
        on_path.discard(path.pop())
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def public_objects() -> set[int]:
    """The ids of every object the public API exports: a type named in a signature may be one of them."""
    return {
        id(getattr(importlib.import_module(module), name))
        for module, names in PUBLIC_API.items()
        for name in names
    }


def signature_problems(where: str, function: Any, public: set[int]) -> list[str]:
    """
    What is wrong with C{function}'s signature, as a public API's: an
    annotation that is C{Any} (anywhere inside it), names a type from a
    private echoapp module that the public API does not export, or cannot
    be resolved at all (a name imported for type checking only).
    """
    function = inspect.unwrap(function)
    try:
        hints = typing.get_type_hints(function)
    except Exception as error:
        return [f"{where}: annotations cannot be resolved ({error})"]
    problems = []
    for parameter, hint in hints.items():
        for found in hint_problems(hint, public):
            problems.append(f"{where}({parameter}): {found}")
    return problems


def hint_problems(hint: Any, public: set[int]) -> list[str]:
    """C{Any}, or private echoapp types, anywhere in one resolved annotation."""
    if hint is Any:
        return ["Any"]
    arguments = typing.get_args(hint)
    if arguments or typing.get_origin(hint) is not None:
        return [problem for argument in arguments for problem in hint_problems(argument, public)]
    module = getattr(hint, "__module__", "") or ""
    private = module.startswith("echoapp") and any(part.startswith("_") for part in module.split("."))
    if private and id(hint) not in public:
        return [f"{module}.{getattr(hint, '__qualname__', hint)} is private"]
    return []


def public_callables(module_name: str, names: set[str]) -> Iterator[tuple[str, Any]]:
    """
    Every public function, method (C{__init__} included) and property
    getter a module exports, with its dotted name: what a user calls.
    """
    module = importlib.import_module(module_name)
    for name in sorted(names):
        value = getattr(module, name)
        if inspect.isfunction(value) or inspect.isfunction(inspect.unwrap(value)):
            yield f"{module_name}.{name}", value
        elif inspect.isclass(value) and value.__module__.startswith("echoapp"):
            for member, attribute in vars(value).items():
                if member.startswith("_") and member != "__init__":
                    continue
                if isinstance(attribute, property) and attribute.fget is not None:
                    yield f"{module_name}.{name}.{member}", attribute.fget
                elif inspect.isfunction(attribute):
                    yield f"{module_name}.{name}.{member}", attribute


def code_lines(path: str) -> int:
    with open(path, encoding="utf-8") as source:
        return sum(1 for line in source if line.strip())


class SignatureCheckerTests(SynchronousTestCase):
    """The signature checker itself: it must see C{Any} and private types wherever they hide."""

    def test_sees_any_and_private_types_inside_unions_and_generics(self) -> None:
        from echoapp._faults import FaultPlan

        def leaky(a: Any, b: list[FaultPlan] | None, c: dict[str, int | Any]) -> None:
            """A bad signature."""

        def clean(a: int, b: list[str] | None, c: echoapp.StartupError) -> None:
            """A good one."""

        leaky.__globals__["FaultPlan"] = FaultPlan
        found = signature_problems("leaky", leaky, public_objects())
        self.assertEqual(len(found), 3, found)
        self.assertEqual(signature_problems("clean", clean, public_objects()), [])


class CycleFinderTests(SynchronousTestCase):
    """The checker itself: it must see a cycle where there is one."""

    def test_finds_a_cycle(self) -> None:
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        self.assertEqual(find_cycle(graph), ["a", "b", "c", "a"])

    def test_a_dag_has_none(self) -> None:
        self.assertIsNone(find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}))

    def source(self, text: str) -> str:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "module.py")
        with open(path, "w") as out:
            out.write(text)
        return path

    def test_foreign_private_attribute_is_not_own(self) -> None:
        tree = ast.parse(
            "class A:\n    __slots__ = ('_slot',)\n    def f(self, t):\n"
            "        self._mine = 1\n        return getattr(t, '_str'), t._theirs\n"
        )
        own = set(defined_names(tree))
        self.assertTrue({"_mine", "_slot"} <= own)
        self.assertFalse({"_theirs", "_str"} & own)

    def test_function_local_imports_count(self) -> None:
        path = self.source("def later():\n    from echoapp.services import named\n")
        self.assertIn(("echoapp.services", "named", 2), list(imported_names(path)))

    def test_from_package_import_module_names_the_module(self) -> None:
        path = self.source("from echoapp._transports import native_tcp\n")
        graph = import_graph({"echoapp.x": path, "echoapp._transports.native_tcp": path})
        self.assertEqual(graph["echoapp.x"], {"echoapp._transports.native_tcp"})

    def test_floors_match_whole_names(self) -> None:
        self.assertEqual(floor_of("echoapp._limits.guard"), 2)
        self.assertEqual(floor_of("echoapp.testing"), floor_of("echoapp.testing.x"))
        self.assertRaises(LookupError, floor_of, "echoapp.configx")


class PackageShapeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.modules = package_modules()

    def test_sees_the_whole_package(self) -> None:
        for name in ("echoapp._limits.guard", "echoapp._tap.common", "echoapp._client.modes", SEAM):
            self.assertIn(name, self.modules)

    def test_imports_form_a_dag(self) -> None:
        cycle = find_cycle(import_graph(self.modules))
        self.assertIsNone(cycle, f"import cycle: {' -> '.join(cycle or [])}")

    def test_no_twisted_test_helper_in_production(self) -> None:
        offenders = [
            f"{name}:{line} imports {module}"
            for name, path in self.modules.items()
            for module, imported, line in imported_names(path)
            if any(f"{module}.{imported}".startswith(helper) for helper in TEST_HELPERS)
        ]
        self.assertEqual(offenders, [])

    def test_twisted_private_names_only_through_the_seam(self) -> None:
        offenders = [
            f"{name}:{line} imports {module}.{imported}"
            for name, path in self.modules.items()
            if not in_seam(name)
            for module, imported, line in imported_names(path)
            if module.startswith("twisted")
            and ((imported or "").startswith("_") or any(part.startswith("_") for part in module.split(".")))
        ]
        self.assertEqual(offenders, [])

    def test_no_private_attribute_strings_outside_the_seam(self) -> None:
        """C{getattr(obj, "_name")} is how a private name hides from the import check."""
        offenders = []
        for name, path in self.modules.items():
            if in_seam(name):
                continue
            with open(path, encoding="utf-8") as source:
                tree = ast.parse(source.read(), path)
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr", "setattr")
                    and len(node.args) > 1
                    and isinstance(node.args[1], ast.Constant)
                    and str(node.args[1].value).startswith("_")
                ):
                    offenders.append(f"{name}:{node.lineno} {node.func.id}(..., {node.args[1].value!r})")
        self.assertEqual(offenders, [])

    def test_no_foreign_private_attributes_outside_the_seam(self) -> None:
        """
        C{transport._tempDataLen}: a private attribute of someone else's
        object is an internal too.  Any C{x._name} outside the seam must
        name something echoapp itself defines (a function, class, attribute
        it assigns, or slot).
        """
        own: set[str] = set()
        trees = {}
        for name, path in self.modules.items():
            with open(path, encoding="utf-8") as source:
                tree = trees[name] = ast.parse(source.read(), path)
            if not in_seam(name):  # what the seam names of Twisted's is not echoapp's own
                own.update(defined_names(tree))
        offenders = [
            f"{name}:{node.lineno} .{node.attr}"
            for name, tree in trees.items()
            if not in_seam(name)
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and node.attr not in own
            and node.attr not in DOCUMENTED_UNDERSCORE_NAMES
        ]
        self.assertEqual(offenders, [])

    def test_imports_point_down_the_layers(self) -> None:
        graph = import_graph(self.modules)
        upward = [
            f"{name} ({LAYERS[floor_of(name)][0]}) imports {target} ({LAYERS[floor_of(target)][0]})"
            for name, targets in sorted(graph.items())
            for target in sorted(targets)
            if floor_of(target) > floor_of(name)
        ]
        self.assertEqual(upward, [])

    def test_public_api_is_the_pinned_list(self) -> None:
        declared = {name: set(importlib.import_module(name).__all__) for name in PUBLIC_API}
        self.assertEqual(declared, PUBLIC_API)

    def test_public_signatures_name_public_types_only(self) -> None:
        """
        What a user passes and gets back through the public API is typed
        with public types: no C{Any}, no private echoapp type, so that a
        C{.tac} file or a test can do everything without a private import.
        """
        public = public_objects()
        problems = [
            problem
            for module_name, names in PUBLIC_API.items()
            for where, function in public_callables(module_name, names)
            for problem in signature_problems(where, function, public)
        ]
        self.assertEqual(problems, [])

    def test_every_other_module_is_private_by_name(self) -> None:
        public = [
            name
            for name in self.modules
            if name not in PUBLIC_API
            and name != "echoapp.__main__"
            and not any(part.startswith("_") for part in name.split(".")[1:])
            and not any(name.startswith(api + ".") for api in PUBLIC_API if api != "echoapp")
        ]
        self.assertEqual(public, [], "modules that look public but are not in PUBLIC_API")

    def test_every_public_name_says_why_it_exists(self) -> None:
        undocumented = []
        for module_name, names in PUBLIC_API.items():
            module = importlib.import_module(module_name)
            if not (module.__doc__ or "").strip():
                undocumented.append(module_name)
            for name in names:
                value = getattr(module, name)
                if (inspect.isclass(value) or inspect.isfunction(value)) and not inspect.getdoc(value):
                    undocumented.append(f"{module_name}.{name}")
                if inspect.isclass(value):
                    undocumented.extend(
                        f"{module_name}.{name}.{member}"
                        for member, function in vars(value).items()
                        if inspect.isfunction(function)
                        and not member.startswith("_")
                        and not function.__doc__
                        and not any(getattr(base, member, None) for base in value.__mro__[1:])
                    )
        self.assertEqual(undocumented, [])

    def test_every_name_without_an_underscore_says_why_it_exists(self) -> None:
        """
        Private modules too: a class or function not private by name has an
        epytext docstring, and so has each method of its own (an override of
        a base class's or an interface's method is documented there).
        """
        interface_names = {
            name
            for module in (internet_interfaces, service_interfaces)
            for value in vars(module).values()
            if isinstance(value, InterfaceClass)
            for name in value.names(all=True)
        }
        undocumented = []
        for module_name in self.modules:
            module = importlib.import_module(module_name)
            for name, value in vars(module).items():
                if name.startswith("_") or getattr(value, "__module__", None) != module_name:
                    continue
                if not (inspect.isclass(value) or inspect.isfunction(value)):
                    continue
                if not value.__doc__:
                    undocumented.append(f"{module_name}.{name}")
                if not inspect.isclass(value):
                    continue
                declared = {n for iface in implementedBy(value).flattened() for n in iface.names(all=True)}
                for member, function in vars(value).items():
                    if member.startswith("_") or not inspect.isfunction(function) or function.__doc__:
                        continue
                    if member in declared | interface_names:
                        continue
                    if any(hasattr(base, member) for base in value.__mro__[1:]):
                        continue
                    undocumented.append(f"{module_name}.{name}.{member}")
        self.assertEqual(undocumented, [])

    def test_setup_cfg_lists_every_package(self) -> None:
        """setup.cfg names packages by hand (C{find:} drops twisted.plugins): a new folder must be listed."""
        parser = configparser.ConfigParser()
        parser.read(os.path.join(os.path.dirname(PACKAGE_DIR), "setup.cfg"))
        listed = set(parser["options"]["packages"].split())
        packages = {name for name, path in self.modules.items() if os.path.basename(path) == "__init__.py"}
        self.assertEqual(packages - listed, set())

    def test_camel_case_only_for_what_twisted_names(self) -> None:
        """
        Twisted's overrides keep Twisted's camelCase (C{dataReceived},
        C{makeService}); echoapp's own names are snake_case.  A camelCase
        method must exist in a base class or a provided interface.
        """
        camel = re.compile(r"^[a-z]+[A-Z]")
        twisteds = {
            name
            for module in (internet_interfaces, service_interfaces)
            for value in vars(module).values()
            if isinstance(value, InterfaceClass)
            for name in value.names(all=True)
        }
        offenders = []
        for module_name in self.modules:
            module = importlib.import_module(module_name)
            for name, value in vars(module).items():
                if inspect.isfunction(value) and value.__module__ == module_name and camel.match(name):
                    if name != "makeService":
                        offenders.append(f"{module_name}.{name}")
                if not (inspect.isclass(value) and value.__module__ == module_name):
                    continue
                declared = {n for iface in implementedBy(value).flattened() for n in iface.names(all=True)}
                for member, function in vars(value).items():
                    if not (inspect.isfunction(function) and camel.match(member)):
                        continue
                    if member in declared | twisteds or any(hasattr(b, member) for b in value.__mro__[1:]):
                        continue
                    offenders.append(f"{module_name}.{name}.{member}")
        self.assertEqual(offenders, [])

    def test_every_module_fits_in_a_head(self) -> None:
        long = {name: code_lines(path) for name, path in self.modules.items() if code_lines(path) > MAX_LINES}
        self.assertEqual(long, {}, f"modules over {MAX_LINES} non-blank lines")
