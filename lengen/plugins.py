"""Plugin discovery through Python entry points.

Groups are `lengen.<kind>`. lengen's own plugins register through the same groups as a third-party
distribution, so there is one loading path. A plugin whose import fails is reported with its error
and does not take the others down; one name provided by two distributions is an error naming both.

`discover` imports the plugins (a run needs their classes). `list_plugins` reads the entry points
and the plugins' source without importing them, so listing does not pay for the libraries the
plugins import (Lightning, for callbacks): `lengen plugins` starts in well under a second.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
import warnings
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

GROUPS = {
    "positional_encodings": "lengen.positional_encodings",
    "callbacks": "lengen.callbacks",
    "metrics": "lengen.metrics",
    "tasks": "lengen.tasks",
}


class PluginConflict(RuntimeError):
    """Two distributions provide the same plugin name in one group."""


@dataclass
class Plugin:
    group: str
    name: str
    distribution: str
    value: str
    obj: object = field(default=None, repr=False)
    error: str | None = None
    docstring: str | None = field(default=None, repr=False)  # read from source when not imported

    @property
    def summary(self) -> str:
        """First line of the plugin's docstring, or its error."""
        if self.error:
            return f"failed to load: {self.error}"
        doc = self.docstring if self.obj is None else getattr(self.obj, "__doc__", None)
        doc = (doc or "").strip()
        return doc.splitlines()[0] if doc else ""


def _distribution_name(entry_point: EntryPoint) -> str:
    dist = entry_point.dist
    return dist.metadata["Name"] if dist is not None else "?"


def _entry_points(group: str) -> list[tuple[EntryPoint, str]]:
    """(entry point, distribution name) of `group`, each name once; PluginConflict for a name
    that two distributions provide."""
    found: dict[str, tuple[EntryPoint, str]] = {}
    # The entry points of one distribution share its object; its metadata (the whole README
    # included) is parsed once, not once per plugin.
    names: dict[int, tuple[object, str]] = {}
    for entry_point in entry_points(group=group):
        key = id(entry_point.dist)
        if key not in names:
            names[key] = (entry_point.dist, _distribution_name(entry_point))  # keeps dist alive
        distribution = names[key][1]
        previous = found.get(entry_point.name)
        if previous is not None:
            previous_entry, previous_distribution = previous
            if previous_distribution == distribution and previous_entry.value == entry_point.value:
                continue  # the same distribution seen twice on sys.path
            raise PluginConflict(
                f"{group}: plugin name {entry_point.name!r} is provided by both "
                f"{previous_distribution!r} ({previous_entry.value}) and {distribution!r} "
                f"({entry_point.value}); uninstall one of them"
            )
        found[entry_point.name] = (entry_point, distribution)
    return list(found.values())


def _warn_failed(plugin: Plugin) -> None:
    warnings.warn(
        f"lengen plugin {plugin.name!r} ({plugin.group}, from {plugin.distribution}) failed to "
        f"load: {plugin.error}",
        stacklevel=3,
    )


@functools.cache
def discover(group: str) -> dict[str, Plugin]:
    """Import every entry point of `group`; name -> Plugin. Failures are warned about, not raised.

    Cached per process; `discover.cache_clear()` looks again (e.g. after changing sys.path).
    """
    found: dict[str, Plugin] = {}
    for entry_point, distribution in _entry_points(group):
        plugin = Plugin(group, entry_point.name, distribution, entry_point.value)
        try:
            plugin.obj = entry_point.load()
        except Exception as error:  # a broken plugin must not take the rest down
            plugin.error = f"{type(error).__name__}: {error}"
            _warn_failed(plugin)
        found[entry_point.name] = plugin
    return found


def list_plugins(group: str) -> dict[str, Plugin]:
    """Every entry point of `group` without importing the plugins' modules; name -> Plugin.

    `obj` stays None; `docstring` comes from the source. `error` holds what importing would
    raise as far as the source shows: a missing module, a syntax error, a missing name, a
    top-level import of a package that is not installed (warned about, as `discover` does).
    Failures only running the module shows are found by `discover` (`lengen plugins --load`).
    A plugin already imported in this process is read from its object.
    """
    found: dict[str, Plugin] = {}
    for entry_point, distribution in _entry_points(group):
        plugin = Plugin(group, entry_point.name, distribution, entry_point.value)
        plugin.docstring, plugin.error = read_plugin_source(entry_point.value)
        if plugin.error:
            _warn_failed(plugin)
        found[entry_point.name] = plugin
    return found


def read_plugin_source(value: str, depth: int = 0) -> tuple[str | None, str | None]:
    """(docstring, error) of the object an entry-point value `module:attr` names, read from the
    module's source file; error is what importing it would raise, or None. A name the module
    imports from another module (`from .impl import Foo`) is followed there (3 levels)."""
    module_name, _, attribute = value.partition(":")
    module_name, attribute = module_name.strip(), attribute.strip().split(".")[0]
    module = sys.modules.get(module_name)
    if module is not None:  # already imported: no reason to guess
        if attribute and not hasattr(module, attribute):
            return None, f"AttributeError: module {module_name!r} has no attribute {attribute!r}"
        return getattr(getattr(module, attribute, module), "__doc__", None), None
    try:
        spec = importlib.util.find_spec(module_name)  # imports the parent packages only
    except Exception as error:  # a parent package is missing or fails
        return None, f"{type(error).__name__}: {error}"
    if spec is None:
        return None, f"ModuleNotFoundError: No module named {module_name!r}"
    if spec.origin is None or not spec.origin.endswith(".py"):
        return None, None  # a compiled or namespace module: nothing to read
    try:
        with open(spec.origin, encoding="utf-8") as file:
            tree = ast.parse(file.read(), spec.origin)
    except (OSError, SyntaxError, ValueError) as error:
        return None, f"{type(error).__name__}: {error}"
    missing = _missing_top_level_import(tree)
    if missing:
        return None, f"ModuleNotFoundError: No module named {missing!r}"
    if not attribute:
        return ast.get_docstring(tree), None
    definitions = _top_level_definitions(tree)
    if attribute not in definitions:
        if "*" in definitions or "__getattr__" in definitions:
            return None, None  # defined in a way the source does not show
        return None, f"AttributeError: module {module_name!r} has no attribute {attribute!r}"
    docstring, source = definitions[attribute]
    if source is None or depth >= 3:
        return docstring, None
    package = spec.name if spec.submodule_search_locations is not None else spec.parent
    try:
        origin = importlib.util.resolve_name(source[0], package)
    except ImportError:
        return None, None
    if origin == module_name:
        return None, None
    # Only the docstring: what importing the other module raises is judged when it is imported.
    return read_plugin_source(f"{origin}:{source[1]}", depth + 1)[0], None


def _missing_top_level_import(tree: ast.Module) -> str | None:
    """The first package imported at module level (outside `if`, `try`) that is not installed."""
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top not in sys.modules and importlib.util.find_spec(top) is None:
                return top
    return None


def _module_statements(body: list[ast.stmt]):
    """Statements that may run at import: `body` and the blocks of its `if`s and `try`s."""
    for node in body:
        if isinstance(node, ast.If):
            yield from _module_statements(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            blocks = [node.body, *(handler.body for handler in node.handlers), node.orelse]
            yield from _module_statements([stmt for block in blocks for stmt in block])
        else:
            yield node


def _top_level_definitions(tree: ast.Module) -> dict[str, tuple[str | None, tuple | None]]:
    """Names a module defines at top level -> (docstring, (module, name) it is imported from or
    None); the key "*" when the module star-imports."""
    names: dict[str, tuple[str | None, tuple | None]] = {}
    for node in _module_statements(tree.body):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = (ast.get_docstring(node), None)
        elif isinstance(node, ast.ImportFrom):
            relative = "." * node.level + (node.module or "")
            for alias in node.names:
                names.setdefault(alias.asname or alias.name, (None, (relative, alias.name)))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names.setdefault(alias.asname or alias.name.split(".")[0], (None, None))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        names.setdefault(name.id, (None, None))
    return names


def discover_all() -> list[Plugin]:
    """Every plugin of every group, loaded (so LightningCLI can resolve short class names)."""
    return [plugin for group in GROUPS.values() for plugin in discover(group).values()]


def available_names(group: str) -> list[str]:
    """Names of the plugins of `group` that loaded."""
    return sorted(name for name, plugin in discover(group).items() if plugin.error is None)


def plugin_of_traceback(traceback) -> tuple[Plugin, str] | None:
    """(plugin, function) of the outermost frame of `traceback` that runs a loaded plugin's code:
    a method of a plugin class (its `self`), else a function of a plugin's module."""
    plugins = [p for group in GROUPS for p in discover(GROUPS[group]).values() if p.error is None]
    by_class = {p.obj: p for p in plugins if isinstance(p.obj, type)}
    by_module = {}
    for plugin in plugins:
        by_module.setdefault(plugin.value.split(":")[0], plugin)
    while traceback is not None:
        frame = traceback.tb_frame
        owner = frame.f_locals.get("self")
        for cls in type(owner).__mro__ if owner is not None else ():
            if cls in by_class:
                return by_class[cls], frame.f_code.co_name
        module = frame.f_globals.get("__name__")
        if module in by_module:
            return by_module[module], frame.f_code.co_name
        traceback = traceback.tb_next
    return None


def plugin_fault(error: BaseException) -> str | None:
    """One line naming the plugin (and its distribution) whose code raised `error`, or None."""
    found = plugin_of_traceback(error.__traceback__)
    if found is None:
        return None
    plugin, function = found
    where = "constructor" if function == "__init__" else f"{function}()"
    first_line = (str(error).strip().splitlines() or [""])[0]
    return (
        f"plugin {plugin.name!r} ({plugin.group}, from distribution {plugin.distribution!r}) "
        f"failed in its {where}: {type(error).__name__}: {first_line}"
    )


def failed_plugin_message(group: str, name: str, key: str) -> str | None:
    """One line for a plugin name that is installed but failed to import, or None."""
    plugin = discover(group).get(name)
    if plugin is None or plugin.error is None:
        return None
    return (
        f"{key} {name!r} is installed (distribution {plugin.distribution!r}) but failed to "
        f"import: {plugin.error}; fix or uninstall that distribution"
    )
