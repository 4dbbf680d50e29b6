"""
Reference pages generated from the code, so that they cannot drift from it.

Each directive reads one source of truth and writes a table:

  - C{echoapp-options MODULE}: a plugin's C{Options} from C{echoapp._tap.*}
    (C{optParameters}, C{optFlags} and C{opt_*} methods: what C{--help} shows);
  - C{echoapp-config CLASS}: the fields of a dataclass of L{echoapp.config},
    with their kinds and bounds (L{echoapp._fields.help_text});
  - C{echoapp-faults}: the fields of L{echoapp._faults.Faults};
  - C{echoapp-metrics}: L{echoapp._metrics.METRICS} and the labels they carry;
  - C{echoapp-log-namespaces}: every C{Logger(namespace=...)} in the package;
  - C{echoapp-endpoints}: the default listen descriptions and the UDP syntax;
  - C{echoapp-modules}: the module map, from each module's docstring.

The tables are docutils nodes built from rows, never text pasted in a page:
an option added to the code is a row here on the next build.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pathlib
import re
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive


def table(
    headers: list[str], rows: list[list[str]], classes: str = "", literal: tuple[int, ...] = (0,)
) -> nodes.table:
    """
    A docutils table: the columns in C{literal} (an option, a name) are code
    whole, a cell written as C{``...``} too; every other cell is
    L{inline}, so that the options and values in help text are code as well.
    """
    table_node = nodes.table(classes=["echoapp-reference", classes] if classes else ["echoapp-reference"])
    group = nodes.tgroup(cols=len(headers))
    table_node += group
    for _ in headers:
        group += nodes.colspec(colwidth=1)
    head = nodes.thead()
    group += head
    head += row_node(headers, literal=())
    body = nodes.tbody()
    group += body
    for row in rows:
        body += row_node(row, literal)
    return table_node


def row_node(cells: list[str], literal: tuple[int, ...]) -> nodes.row:
    row = nodes.row()
    for index, cell in enumerate(cells):
        entry = nodes.entry()
        paragraph = nodes.paragraph()
        if cell and (index in literal or (cell.startswith("``") and cell.endswith("``"))):
            paragraph += nodes.literal(text=cell[2:-2] if cell.startswith("``") else cell)
        else:
            paragraph += inline(cell)
        entry += paragraph
        row += entry
    return row


# What a reader pastes into a shell or a config, found in prose: epytext's
# C{...} and L{...} (the docstrings are epytext), a quoted command or value,
# '' (the empty value), a 'word' quoted, an option (with a quoted value
# after it: --reply '{}'), an environment setting.  Rendered as code,
# smart quotes leave them alone: --metrics does not become an en dash, nor ''
# curly quotes.
_CODE = re.compile(
    r"""(?P<epytext>(?P<kind>[CLIBU])\{(?P<body>(?:[^{}]|\{[^{}]*\})*)\})"""
    r"""|"(?P<quoted>[^"\s][^"]*)"|(?P<empty>'')|(?<!\w)'(?P<single>[^'\s]+)'(?!\w)"""
    r"""|(?<![\w-])(?P<option>--[A-Za-z][\w-]*(?:=[^\s,;)]*[^\s,;).]| '[^'\s]*')?)"""
    r"""|(?<![\w-])(?P<setting>[A-Z][A-Z0-9]*_[A-Z0-9_]+=[^\s,;)]*[^\s,;).])"""
)


def inline(text: str) -> list[nodes.Node]:
    """
    Prose from the code (help text, a docstring's first paragraph) as
    docutils nodes: epytext markup as what it means (C{x} and L{x} code,
    I{x} emphasis, B{x} strong), and options, quoted values, C{''} and
    environment settings as code.  Nothing else is read as markup: help
    text is not reST.
    """
    found: list[nodes.Node] = []
    at = 0
    for match in _CODE.finditer(text):
        if match.start() > at:
            found.append(nodes.Text(text[at : match.start()]))
        at = match.end()
        if match["epytext"]:
            body = match["body"]
            kind = match["kind"]
            if kind in "LU":
                body = re.sub(r"^(.*?)\s*<[^<>]+>$", r"\1", body, flags=re.DOTALL)  # L{text<target>}
            if kind in "CLU":
                found.append(nodes.literal(text=body))
            else:
                node = nodes.emphasis() if kind == "I" else nodes.strong()
                node += inline(body)
                found.append(node)
        else:
            found.append(nodes.literal(text=match["quoted"] or match["single"] or match["empty"] or match[0]))
    if at < len(text):
        found.append(nodes.Text(text[at:]))
    return found


def one_line(text: str | None) -> str:
    """Help text as one line, whatever the source's wrapping."""
    return " ".join((text or "").split())


def option_rows(options_class: type) -> list[list[str]]:
    """
    Every option of a C{usage.Options} class: name, default, help, as
    C{--help} lists them.  The declarations are gathered from the whole
    class hierarchy, as C{usage.Options} gathers them (a plugin inherits
    C{--record} and the rest from the options every serving plugin shares);
    a subclass's declaration of a name wins over its base's.
    """
    from twisted.python.reflect import accumulateClassList

    parameters: list[Any] = []
    flags: list[Any] = []
    accumulateClassList(options_class, "optParameters", parameters)
    accumulateClassList(options_class, "optFlags", flags)
    rows, seen = [], set()
    for name, _short, default, help_text, *_ in reversed(parameters):  # the subclass's last
        if name not in seen:
            seen.add(name)
            rows.append([f"--{name}", "" if default is None else f"``{default}``", one_line(help_text)])
    for name, _short, help_text in reversed(flags):
        if name not in seen:
            seen.add(name)
            rows.append([f"--{name}", "off", one_line(help_text)])
    for attribute in sorted(dir(options_class)):
        if not attribute.startswith("opt_") or attribute in ("opt_help", "opt_version"):
            continue
        method = getattr(options_class, attribute)
        name = attribute[len("opt_") :].replace("_", "-")
        rows.append([f"--{name}", "", one_line(inspect.getdoc(method))])
    return sorted(rows)


class OptionsDirective(Directive):
    """
    C{.. echoapp-options:: echoapp._tap.tcp}: that plugin's options;
    C{MODULE:CLASS} for another C{usage.Options} class (the client's modes).
    """

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module_name, _, class_name = self.arguments[0].partition(":")
        options_class = getattr(importlib.import_module(module_name), class_name or "Options")
        intro = nodes.paragraph("", "", *inline(one_line(getattr(options_class, "longdesc", ""))))
        rows = option_rows(options_class)
        return [intro, table(["option", "default", "help"], rows, "options")]


def field_rows(config: type) -> list[list[str]]:
    from echoapp._fields import help_text, option_name, shown_default

    rows = []
    for field in dataclasses.fields(config):
        if "kind" in field.metadata:
            rows.append(
                [field.name, f"``{shown_default(field)}``", f"--{option_name(field.name)}", help_text(field)]
            )
    return rows


class ConfigDirective(Directive):
    """C{.. echoapp-config:: GreeterConfig}: the fields of one dataclass of L{echoapp.config}."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        config = getattr(importlib.import_module("echoapp.config"), self.arguments[0])
        return [table(["field", "default", "option", "help and bound"], field_rows(config), literal=(0, 2))]


class FaultsDirective(Directive):
    """C{.. echoapp-faults::}: every field of C{Faults}, as C{--fault} and C{Faults(...)} take it."""

    def run(self) -> list[nodes.Node]:
        from echoapp._faults import Faults

        rows = []
        for field in dataclasses.fields(Faults):
            default = "off" if field.default in (None, 0, 0.0, "", False) else f"``{field.default!r}``"
            rows.append(
                [field.name, default, field.name.replace("_", "-"), one_line(field.metadata.get("help"))]
            )
        return [
            table(["Faults field", "default", "--fault key", "what the server does"], rows, literal=(0, 2))
        ]


class MetricsDirective(Directive):
    """C{.. echoapp-metrics::}: every metric the collector exports, as Prometheus names it."""

    def run(self) -> list[nodes.Node]:
        from echoapp import _metrics, _reasons

        keys = {"reason": None, "kind": _reasons.TIMEOUTS}
        rows = []
        for name, text, kind, attribute, key in _metrics.METRICS:
            counter = kind.__name__.startswith("Counter")
            labels = list(_metrics.LABELS)
            if key is not None:
                values = keys.get(key)
                if values is None:
                    values = _reasons.REFUSALS if "refused" in attribute else _reasons.DROPS
                labels.append(f"{key}={'|'.join(values)}")
            rows.append([name + ("_total" if counter else ""), "counter" if counter else "gauge",
                         ", ".join(labels), text])  # fmt: skip
        return [table(["metric", "type", "labels", "meaning"], rows, literal=(0, 2))]


def log_namespaces() -> list[tuple[str, str]]:
    """Every C{Logger(namespace=...)} in the package, with the module that owns it."""
    import echoapp

    root = pathlib.Path(echoapp.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Logger":
                for keyword in node.keywords:
                    if keyword.arg == "namespace" and isinstance(keyword.value, ast.Constant):
                        module = "echoapp." + ".".join(path.relative_to(root).with_suffix("").parts)
                        found.append((str(keyword.value.value), module))
    return found


class LogNamespacesDirective(Directive):
    """C{.. echoapp-log-namespaces::}: the log namespaces, found in the source."""

    def run(self) -> list[nodes.Node]:
        rows = []
        for namespace, module in log_namespaces():
            doc = inspect.getdoc(importlib.import_module(module)) or ""
            rows.append([namespace, module, one_line(doc.split("\n\n", 1)[0])])
        return [table(["namespace", "module", "what logs there"], rows, literal=(0, 1))]


class EndpointsDirective(Directive):
    """C{.. echoapp-endpoints::}: the default listen descriptions, from the code that uses them."""

    def run(self) -> list[nodes.Node]:
        from echoapp._transports import endpoints

        rows = [
            ["--listen (echoapp-tcp), --tcp (echoapp)", f"``{endpoints.DEFAULT_TCP_LISTEN}``",
             "any Twisted server endpoint string, optionally behind haproxy:"],
            ["--listen (echoapp-echo), --echo (echoapp)", f"``{endpoints.DEFAULT_ECHO_LISTEN}``",
             "any Twisted server endpoint string, optionally behind haproxy:"],
            ["--listen (echoapp-udp), --udp (echoapp)", f"``{endpoints.DEFAULT_UDP_LISTEN}``",
             f"echoapp's own syntax: {endpoints.UDP_SYNTAX}"],
        ]  # fmt: skip
        return [table(["option", "default", "accepts"], rows)]


class ModulesDirective(Directive):
    """C{.. echoapp-modules::}: every module of the package with the first paragraph of its docstring."""

    def run(self) -> list[nodes.Node]:
        import echoapp

        root = pathlib.Path(echoapp.__file__).parent
        rows = []
        for path in sorted(root.rglob("*.py")):
            relative = path.relative_to(root)
            tree = ast.parse(path.read_text(encoding="utf-8"))
            doc = ast.get_docstring(tree) or ""
            rows.append([f"echoapp/{relative.as_posix()}", one_line(doc.split("\n\n", 1)[0])])
        return [table(["module", "what it is for (its docstring)"], rows)]


# echoapp's docstrings are epytext (Twisted's convention, for pydoctor); autodoc reads reST.
_EPYTEXT_FIELDS = [
    (re.compile(r"^(\s*)@ivar (\w+):", re.MULTILINE), r"\1:ivar \2:"),
    (re.compile(r"^(\s*)@param (\w+):", re.MULTILINE), r"\1:param \2:"),
    (re.compile(r"^(\s*)@type (\w+):", re.MULTILINE), r"\1:type \2:"),
    (re.compile(r"^(\s*)@raise (\w[\w.]*):", re.MULTILINE), r"\1:raises \2:"),
    (re.compile(r"^(\s*)@return:", re.MULTILINE), r"\1:returns:"),
    (re.compile(r"^(\s*)@rtype:", re.MULTILINE), r"\1:rtype:"),
]
_EPYTEXT_INLINE = re.compile(r"([CLIBU])\{((?:[^{}]|\{[^{}]*\})*)\}")
# An option in a docstring's prose, outside any ``code`` already there.
_LITERAL_OR_OPTION = re.compile(r"(``.+?``|:\w+:`[^`]*`|`[^`]*`)|(?<![\w`-])(--[A-Za-z][\w-]*)")
_LIST_OR_FIELD = re.compile(r"\s*(?:[-*+] |\d+[.)] |[:@]|>>>)")


def _examples_as_code(lines: list[str]) -> list[str]:
    """
    An indented block after a paragraph of prose is an example in these
    docstrings (epytext has no other use for it); reST would make it a
    quotation, smart quotes and all.  A C{" ::"} ends the paragraph, so it
    is a literal block (the colons themselves are not shown).
    """
    out = list(lines)

    def indent(line: str) -> int:
        return len(line) - len(line.lstrip())

    for number in range(1, len(lines) - 1):
        before, blank, block = lines[number - 1], lines[number], lines[number + 1]
        if blank.strip() or not before.strip() or not block.strip():
            continue
        if indent(block) <= indent(before) or before.rstrip().endswith("::") or _LIST_OR_FIELD.match(block):
            continue
        start = number - 1
        while start > 0 and lines[start - 1].strip() and indent(lines[start - 1]) == indent(before):
            start -= 1
        if _LIST_OR_FIELD.match(lines[start]):
            continue  # a list item or a field carries on, indented: not an example
        out[number - 1] = before.rstrip() + " ::"
    return out


def epytext_to_rest(text: str) -> str:
    """
    C{x} as ``x``, L{x} as a cross-reference, I{x} and B{x} as emphasis,
    @fields as reST fields, a bare C{--option} as code and an indented
    example as a literal block.
    """

    def inline(match: re.Match[str]) -> str:
        kind, body = match[1], match[2]
        if kind in "LU":
            body = re.sub(r"^(.*?)\s*<[^<>]+>$", r"\1", body, flags=re.DOTALL)
        if kind == "L":
            return f":py:obj:`{body}`"
        if kind in "CU":
            return f"``{body}``" if body else "``{}``"
        return f"*{body}*" if kind == "I" else f"**{body}**"

    def option(match: re.Match[str]) -> str:
        return match[1] or f"``{match[2]}``"

    text = "\n".join(_examples_as_code(text.split("\n")))
    for pattern, replacement in _EPYTEXT_FIELDS:
        text = pattern.sub(replacement, text)
    text = _EPYTEXT_INLINE.sub(inline, text)
    lines = text.split("\n")
    in_block = None
    for number, line in enumerate(lines):
        if in_block is not None and line.strip() and len(line) - len(line.lstrip()) <= in_block:
            in_block = None
        if in_block is None:
            lines[number] = _LITERAL_OR_OPTION.sub(option, line)
            if line.rstrip().endswith("::"):
                in_block = len(line) - len(line.lstrip())
    return "\n".join(lines)


def process_docstring(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    converted = epytext_to_rest("\n".join(lines)).split("\n")
    lines[:] = converted


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("echoapp-options", OptionsDirective)
    app.add_directive("echoapp-config", ConfigDirective)
    app.add_directive("echoapp-faults", FaultsDirective)
    app.add_directive("echoapp-metrics", MetricsDirective)
    app.add_directive("echoapp-log-namespaces", LogNamespacesDirective)
    app.add_directive("echoapp-endpoints", EndpointsDirective)
    app.add_directive("echoapp-modules", ModulesDirective)
    app.connect("autodoc-process-docstring", process_docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
