"""Plugin discovery through Python entry points.

Groups are `lengen.<kind>`. lengen's own plugins register through the same groups as a third-party
distribution, so there is one loading path. A plugin whose import fails is reported with its error
and does not take the others down; one name provided by two distributions is an error naming both.
"""

from __future__ import annotations

import functools
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

    @property
    def summary(self) -> str:
        """First line of the plugin's docstring, or its error."""
        if self.error:
            return f"failed to load: {self.error}"
        doc = (getattr(self.obj, "__doc__", None) or "").strip()
        return doc.splitlines()[0] if doc else ""


def _distribution_name(entry_point: EntryPoint) -> str:
    dist = entry_point.dist
    return dist.metadata["Name"] if dist is not None else "?"


@functools.cache
def discover(group: str) -> dict[str, Plugin]:
    """Import every entry point of `group`; name -> Plugin. Failures are warned about, not raised.

    Cached per process; `discover.cache_clear()` looks again (e.g. after changing sys.path).
    """
    found: dict[str, Plugin] = {}
    for entry_point in entry_points(group=group):
        distribution = _distribution_name(entry_point)
        previous = found.get(entry_point.name)
        if previous is not None:
            if previous.distribution == distribution and previous.value == entry_point.value:
                continue  # the same distribution seen twice on sys.path
            raise PluginConflict(
                f"{group}: plugin name {entry_point.name!r} is provided by both "
                f"{previous.distribution!r} ({previous.value}) and {distribution!r} "
                f"({entry_point.value}); uninstall one of them"
            )
        plugin = Plugin(group, entry_point.name, distribution, entry_point.value)
        try:
            plugin.obj = entry_point.load()
        except Exception as error:  # a broken plugin must not take the rest down
            plugin.error = f"{type(error).__name__}: {error}"
            warnings.warn(
                f"lengen plugin {entry_point.name!r} ({group}, from {distribution}) failed to "
                f"load: {plugin.error}",
                stacklevel=2,
            )
        found[entry_point.name] = plugin
    return found


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
