"""The root `donorcast` command group: a command's module is imported only when that command runs.

`donorcast --help` lists every command with its docstring (or its Typer's `help=`) read from the
module's source with `ast`, so drawing the list imports none of them: between them they pull in
torch, sklearn, faust and selenium, seconds of imports before any help appeared. The group also
shows every parameter with click's metavars (`PATHS...`, `INTEGER`, `TEXT`, nothing after a flag)
instead of typer's type names (`{paths}...`, `<list[Path]>`, `<bool>`).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from difflib import get_close_matches
from pathlib import Path
from typing import Any, ClassVar

import typer
import typer.main
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

try:
    from typer._click.exceptions import UsageError  # typer >= 0.29 vendors click
except ImportError:  # pragma: no cover - older typer uses click itself
    from click.exceptions import UsageError  # type: ignore[no-redef]


class LazyGroup(TyperGroup):
    """A TyperGroup whose `lazy` commands ("name" -> "module:attribute") load on first use.

    A function becomes a command, a `typer.Typer` a command group. A command whose module does not
    exist (yet) is left out, as it was when every module was imported up front."""

    lazy: ClassVar[dict[str, str]] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._describing = False
        for command in self.commands.values():
            click_metavars(command)

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return [*self.commands, *(name for name, target in self.lazy.items()
                                  if name not in self.commands and _module_exists(target))]

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        target = self.lazy.get(cmd_name)
        if target is None:
            return None
        if self._describing:  # drawing this group's help: the command's text is enough
            text = docstring(target)
            if text is not None:
                return TyperCommand(name=cmd_name, help=text)
        command = load_command(cmd_name, target)
        if command is not None:
            self.commands[cmd_name] = command
        return command

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        self._describing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._describing = False

    def get_params(self, ctx: typer.Context) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:  # the completion options are appended after __init__
            _convert(param)
        return params

    def resolve_command(self, ctx: typer.Context, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except UsageError as error:  # typer suggests among loaded commands only: suggest among all
            matches = get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if matches and "Did you mean" not in error.message:
                error.message = f"{error.message.rstrip('.')}. Did you mean {', '.join(map(repr, matches))}?"
            raise


def load_command(name: str, target: str) -> Any:
    """The click command for "module:attribute" (built as typer builds it), or None when that module
    does not exist."""
    module_name, attribute = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            return None
        raise
    obj = getattr(module, attribute)
    holder = typer.Typer(add_completion=False)
    if isinstance(obj, typer.Typer):
        holder.add_typer(obj, name=name)
    else:
        holder.command(name)(obj)
    return click_metavars(typer.main.get_group(holder).commands[name])


def docstring(target: str) -> str | None:
    """The help text of "module:attribute" from the module's source: the function's docstring, or the
    `help=` of `attribute = typer.Typer(help=...)`; None when the source does not say (then the
    module is imported after all)."""
    module_name, attribute = target.split(":")
    origin = _origin(module_name)
    if origin is None:
        return None
    for node in ast.parse(Path(origin).read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == attribute:
            return ast.get_docstring(node) or ""
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if isinstance(value, ast.Call) and any(isinstance(t, ast.Name) and t.id == attribute for t in targets):
            for keyword in value.keywords:
                if keyword.arg == "help" and isinstance(keyword.value, ast.Constant):
                    return inspect.cleandoc(str(keyword.value.value))
    return None


def _origin(module_name: str) -> str | None:
    """The module's source file, found without importing it or its parent packages: find_spec of a
    dotted name imports every parent, and a package's __init__ (the dashboard's) can be heavy."""
    top, *rest = module_name.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ModuleNotFoundError, ValueError):
        return None
    if spec is None:
        return None
    if not rest:
        return spec.origin if spec.origin and spec.origin.endswith(".py") else None
    for location in spec.submodule_search_locations or []:
        base = Path(location).joinpath(*rest)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return str(candidate)
    return None


def _module_exists(target: str) -> bool:
    return _origin(target.split(":")[0]) is not None


# ---------------------------------------------------------------- click's metavars

_CLICK_TYPE_NAMES = {"int": "INTEGER", "float": "FLOAT", "str": "TEXT", "bool": "BOOLEAN", "path": "PATH",
                     "Path": "PATH", "file": "FILENAME", "directory": "DIRECTORY", "datetime": "DATETIME"}


def click_type_name(param: TyperArgument | TyperOption, ctx: typer.Context) -> str:
    """typer's '<int range>', '<list[Path]>', '<a|b>' as click writes them: INTEGER, PATH, [a|b]."""
    label = param.display_type(ctx).strip("<>")
    label = label.removeprefix("list[").removesuffix("]") if label.startswith("list[") else label
    label = label.removesuffix(" range")
    if "|" in label:
        return f"[{label}]"
    return _CLICK_TYPE_NAMES.get(label, label.upper())


class _ClickArgument(TyperArgument):
    """PATHS... in the usage line and the name column, its type (PATH) beside it."""

    @property
    def display_name_raw(self) -> str:
        return self.metavar or (self.name or "").upper()

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return f"{name}..." if self.nargs != 1 else name

    def display_type_rich(self, ctx: typer.Context) -> str | None:
        return click_type_name(self, ctx)


class _ClickOption(TyperOption):
    """INTEGER, TEXT, PATH after an option that takes a value; nothing after a flag."""

    def display_type_rich(self, ctx: typer.Context) -> str | None:
        if self.metavar is not None:
            return self.metavar
        if self.is_flag or self.count:
            return None
        name = click_type_name(self, ctx)
        return f"{name}..." if self.nargs != 1 else name


def _convert(param: Any) -> None:
    if not hasattr(TyperArgument, "display_type"):  # typer before 0.29 already shows click's metavars
        return
    if type(param) is TyperArgument:
        param.__class__ = _ClickArgument
    elif type(param) is TyperOption:
        param.__class__ = _ClickOption


def click_metavars(command: Any) -> Any:
    """`command` (and its subcommands) with click's metavars; returns it."""
    for param in command.params:
        _convert(param)
    help_option = command.get_help_option(typer.Context(command))
    if help_option is not None:
        _convert(help_option)
    for sub in getattr(command, "commands", {}).values():
        click_metavars(sub)
    return command
