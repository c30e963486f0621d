"""The lines of the package that each rung of a ladder turns on, read from the source itself.

A rung sets fields of a recipe (`recipes.Rung.changes`). `knob_lines(function, names)` finds the
statements of `function` that read one of those fields (`recipe.channels_last`, `config.attention`,
...): a simple statement whole, a compound one (`if recipe.fused:`) with its body, and the statements
that then read a local name those statements assigned (`dtype = ...[recipe.precision]`, then
`torch.autocast(..., dtype=dtype)`; not `model = model.to(...)`); a `return a, b, c` that only hands such names back is left out. `rung_code` does it
for every function that turns a recipe into a training step, so the page shows the code a rung
changes, and the page and the code cannot drift apart.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# The names a recipe's fields are read through: the recipe itself, a model's config, or the module's own.
OWNERS = ("recipe", "config", "self")


@dataclass(frozen=True)
class Snippet:
    """Lines of one function that read a knob: where they are and their text (dedented)."""

    function: str       # module.qualname, e.g. "recipes.build"
    line: int           # the first line's number in its file
    text: str


def _reads(node: ast.AST, names: set[str], owners: tuple[str, ...], local: set[str]) -> bool:
    """True if `node` (not counting nested statements) reads `owner.name` for a name in `names`, or a `local` name."""
    if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
        return False
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.Name) and isinstance(item.ctx, ast.Load) and item.id in local:
            return True
        if isinstance(item, ast.Attribute) and item.attr in names:
            base = item.value
            if isinstance(base, ast.Attribute) and base.attr in owners:   # self.config.checkpoint
                return True
            if isinstance(base, ast.Name) and base.id in owners:
                return True
        stack.extend(child for child in ast.iter_child_nodes(item) if not isinstance(child, ast.stmt))
    return False


def _header_end(node: ast.stmt) -> int:
    """The last line of a compound statement's own part and body (an if's else branch left out)."""
    body = getattr(node, "body", None)
    return body[-1].end_lineno if body else node.end_lineno


def _derived(node: ast.stmt) -> set[str]:
    """The new local names a simple assignment derives from a knob (`dtype = ...`, not `x = f(x)`)."""
    if not isinstance(node, ast.Assign):
        return set()
    read = {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
    return {t.id for t in node.targets if isinstance(t, ast.Name) and t.id not in read}


def _matches(statements: Iterable[ast.stmt], names: set[str], owners: tuple[str, ...],
             local: set[str]) -> Iterable[tuple[int, int]]:
    """(first, last) line of each outermost statement that reads one of `names` (or a name assigned from
    one, added to `local`), in source order."""
    for node in statements:
        if _reads(node, names, owners, local):
            local.update(_derived(node))
            yield node.lineno, _header_end(node)
            yield from _matches(getattr(node, "orelse", []), names, owners, local)  # an elif reads its own knob
            continue
        for field in ("body", "orelse", "finalbody", "handlers"):
            yield from _matches(getattr(node, field, []), names, owners, local)


def knob_lines(function: Callable, names: Iterable[str], owners: tuple[str, ...] = OWNERS) -> list[Snippet]:
    """The statements of `function` that read `owner.name` for one of `names`, as snippets."""
    lines, start = inspect.getsourcelines(function)
    source = textwrap.dedent("".join(lines))
    tree = ast.parse(source).body[0]
    body = tree.body if isinstance(tree, (ast.FunctionDef, ast.AsyncFunctionDef)) else [tree]
    where = f"{function.__module__.rsplit('.', 1)[-1]}.{function.__qualname__}"
    text = source.splitlines()
    return [Snippet(where, start + first - 1, textwrap.dedent("\n".join(text[first - 1:last])))
            for first, last in _matches(body, set(names), owners, set())]


def rung_code(changes: dict, functions: Iterable[Callable], aliases: dict[str, tuple[str, ...]] | None = None,
              ) -> list[Snippet]:
    """Every snippet of `functions` that reads a field `changes` sets (or one of its `aliases`)."""
    names = set(changes)
    for name in changes:
        names.update((aliases or {}).get(name, ()))
    return [snippet for function in functions for snippet in knob_lines(function, names)]


def show(snippets: list[Snippet]) -> str:
    """Snippets as text: a `# module.function, line N` header over each one's lines."""
    return "\n".join(f"# {s.function}, line {s.line}\n{s.text}" for s in snippets)


def step_sources(task: str) -> tuple[tuple[Callable, ...], dict[str, tuple[str, ...]]]:
    """The functions that turn a `task`'s recipe into a training step, and other names its knobs go by there."""
    from . import gpt, lm, recipes

    if task == "mnist":
        return (recipes.make_loader, recipes.steps_for, recipes.build, recipes.step_fn, recipes.autocast,
                recipes.backend_settings), {}
    if task == "shakespeare":
        return ((lm.LMRecipe.model_config, gpt.CausalSelfAttention.__init__, gpt.GPT.forward, lm.build, lm.lm_step,
                 recipes.autocast), {"checkpointing": ("checkpoint",)})
    raise ValueError(f"unknown task {task!r}: use mnist or shakespeare")


def task_rungs(task: str) -> list:
    """The ladder of `task` (`ladder.RUNGS` for MNIST, `lm.RUNGS` for Shakespeare)."""
    from . import ladder, lm

    return {"mnist": ladder.RUNGS, "shakespeare": lm.RUNGS}[task]


def ladder_code(task: str) -> str:
    """Each rung of `task`'s ladder that changes something: its changes, then the lines that read them."""
    functions, aliases = step_sources(task)
    blocks = []
    for i, rung in enumerate(task_rungs(task)):
        if rung.changes:
            changes = ", ".join(f"{k}={v!r}" for k, v in rung.changes.items())
            body = show(rung_code(rung.changes, functions, aliases))
            blocks.append(f"=== rung {i}: {rung.name} ({changes})\n{body}")
    return "\n\n".join(blocks)
