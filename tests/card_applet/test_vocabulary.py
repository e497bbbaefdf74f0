"""The card vocabulary (card_applet/vocabulary.py): one table of instructions, what each is
called and whether it carries secrets, read by card and terminal alike; and nothing above the
card reads a constant from an implementation module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from card_applet import applet
from card_applet.vocabulary import Ins, command_name, instruction, is_secret_command

REPO = Path(__file__).resolve().parents[2]


def test_the_secret_commands_are_those_docs_apdu_lists() -> None:
    # docs/apdu.md 10: inter-industry 20 24 2C 2A 82 88 86 87, proprietary 50 E2 F0
    inter = {ins for ins in range(256) if is_secret_command(0x00, ins)}
    proprietary = {ins for ins in range(256) if is_secret_command(0x80, ins)}
    assert inter == {0x20, 0x24, 0x2C, 0x2A, 0x82, 0x88, 0x86, 0x87}
    assert proprietary == {0x50, 0xE2, 0xF0}


@pytest.mark.parametrize(("cla", "ins", "known"), [
    (0x00, 0x20, Ins.VERIFY), (0x0C, 0x20, Ins.VERIFY), (0x80, 0x20, None),
    (0x00, 0xC0, Ins.GET_RESPONSE), (0x80, 0xC0, None),
    (0x80, 0xE2, Ins.STORE_DATA), (0x90, 0xE2, Ins.STORE_DATA), (0x00, 0xE2, None),
    (0x00, 0x02, None),
])
def test_an_instruction_means_something_only_in_its_class(cla: int, ins: int,
                                                           known: Ins | None) -> None:
    assert instruction(cla, ins) is known


def test_commands_are_named_by_the_vocabulary() -> None:
    assert command_name(0x00, 0x2A) == "PERFORM SECURITY OPERATION"
    assert command_name(0x80, 0x50) == "INITIALIZE UPDATE"
    assert command_name(0x80, 0x20) == "INS 20"  # a proprietary 20 is not VERIFY


def test_every_handler_serves_a_vocabulary_instruction_in_its_class() -> None:
    for table, proprietary in ((applet._INTER_INDUSTRY, False), (applet._PROPRIETARY, True)):
        assert table, "no handlers registered: the test proves nothing"
        for ins in table:
            assert isinstance(ins, Ins) and ins.proprietary is proprietary, ins


# what an implementation module may still be imported for from above the card
ALLOWED = {"card_applet.applet": {"Applet"}}

def _defined_in(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


VOCABULARY = _defined_in(REPO / "card_applet" / "vocabulary.py")


def test_terminal_and_host_read_the_card_constants_from_the_vocabulary() -> None:
    checked = 0
    for top in ("terminal", "host"):
        for path in sorted((REPO / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.ImportFrom) or node.module is None:
                    continue
                if not node.module.startswith("card_applet.") or node.module.endswith(
                        ".vocabulary"):
                    continue
                checked += 1
                names = {alias.name for alias in node.names}
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                assert not names & VOCABULARY - ALLOWED.get(node.module, set()), (
                    f"{where} imports {sorted(names & VOCABULARY)} from {node.module}, "
                    "not from card_applet.vocabulary")
                if node.module in ALLOWED:
                    assert names <= ALLOWED[node.module], f"{where}: {sorted(names)}"
    assert checked, "no card_applet import found: the test proves nothing"
