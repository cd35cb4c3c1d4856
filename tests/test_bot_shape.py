"""The bot's shape (issue #13, "the bot by feature"): no import circles anywhere in bot/ (function-level
and TYPE_CHECKING imports included), the feature contracts in pyproject.toml hold, and the buttons
keep the custom ids of messages already posted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from bot.features.clips.buttons import ClipVoteButton, PublishButton
from bot.features.continuations.buttons import ContinueButton
from bot.features.recipes.buttons import RemixButton
from bot.features.status.buttons import CancelButton
from bot.features.voting.buttons import AgainButton, CloseVoteButton, RerollButton, VoteButton

ROOT = Path(__file__).resolve().parents[1]


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in graph.modules:
                continue
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("a", "b", "c", "d"):
        graph.add_module(name)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="c")
    graph.add_import(importer="c", imported="a")
    graph.add_import(importer="d", imported="a")
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_no_import_circles_in_the_bot() -> None:
    graph = grimp.build_graph("bot", exclude_type_checking_imports=False)
    assert import_cycles(graph) == []


def test_the_bot_feature_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    if not lint.exists():
        pytest.skip("import-linter is not installed (the test extra)")
    out = subprocess.run(
        [str(lint), "--contract", "bot-shape", "--contract", "bot-features", "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_buttons_keep_the_custom_ids_of_posted_messages() -> None:
    assert CancelButton(7).custom_id == "jb:cancel:7"
    assert VoteButton(7, 12).custom_id == "jb:vote:7:12"
    assert CloseVoteButton(7).custom_id == "jb:close:7"
    assert ContinueButton(3).custom_id == "jb:continue:3"
    assert ClipVoteButton(3, 2).custom_id == "jb:clipvote:3"
    assert PublishButton(3).custom_id == "jb:publish:3"
    assert RerollButton(7).custom_id == "jb:reroll:7"
    assert AgainButton(7, 12, index=1).custom_id == "jb:again:7:12"
    assert RemixButton(3).custom_id == "jb:remix:3"
