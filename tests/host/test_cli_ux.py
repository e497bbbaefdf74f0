"""The command line's conventions: global --home/--reader/--state, -h, an Examples section in
every command's help whose command lines parse, --json output with the keys README
documents, and tables kept whole through a pipe."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from host.cli import main as cli
from host.cli.examples import leaf_commands

REPO = Path(__file__).resolve().parents[2]
HOLDER = "holder:alice@example.org"
SECRETS = {"NETTX_PIN": "1234", "NETTX_PUK": "12345678"}
LEAVES = list(leaf_commands(cli.main))


pytestmark = pytest.mark.usefixtures("restore_process_state")


def nettx(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.main, [str(a) for a in args], env=env or {})


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A centre (k = 4) in HOME and a card personalised for HOLDER: (home, state)."""
    root = tmp_path_factory.mktemp("ux")
    home, state = root / "home", root / "alice.card.json"
    runner = CliRunner()
    for args in (["authority", "init", "--home", home, "--k", "4"],
                 ["card", "new", "--home", home, "--state", state],
                 ["authority", "personalise", "--home", home, "--holder", HOLDER,
                  "--reader", f"inprocess:{state}"]):
        result = runner.invoke(cli.main, [str(a) for a in args], env=SECRETS)
        assert result.exit_code == 0, result.output
    return home, state


# -- options where people put them -----------------------------------------------------------


def test_global_home_reaches_the_subcommand(tmp_path: Path) -> None:
    ok(nettx("--home", tmp_path / "h", "authority", "init", "--k", "2"))
    assert (tmp_path / "h" / "authority" / "master.bin").exists()
    ok(nettx("--home", tmp_path / "h", "authority", "issue", "seller:s"))
    assert (tmp_path / "h" / "rows" / "seller_s.row.json").exists()


def test_the_subcommands_own_option_wins_over_the_global_one(tmp_path: Path) -> None:
    ok(nettx("--home", tmp_path / "global", "authority", "init", "--k", "2",
             "--home", tmp_path / "own"))
    assert (tmp_path / "own" / "authority").is_dir()
    assert not (tmp_path / "global").exists()


def test_the_global_home_wins_over_the_environment(tmp_path: Path) -> None:
    ok(nettx("--home", tmp_path / "flag", "authority", "init", "--k", "2",
             env={"NETTX_HOME": str(tmp_path / "env")}))
    assert (tmp_path / "flag" / "authority").is_dir() and not (tmp_path / "env").exists()


def test_global_state_and_reader(card: tuple[Path, Path], tmp_path: Path) -> None:
    home, state = card
    by_state = json.loads(ok(nettx("--state", state, "card", "info", "--json")).stdout)
    by_reader = json.loads(ok(nettx("-r", f"inprocess:{state}", "card", "info",
                                    "--json")).stdout)
    assert by_state["serial"] == by_reader["serial"]
    # a subcommand's --reader wins: this one does not exist, so the command must fail
    result = nettx("--reader", f"inprocess:{state}", "card", "info", "--reader", "bogus:1")
    assert result.exit_code == 1 and "unknown reader 'bogus:1'" in result.output
    ok(nettx("--home", home, "--state", tmp_path / "new.json", "card", "new"))
    assert (tmp_path / "new.json").exists()


def test_every_command_that_touches_the_home_takes_it(card: tuple[Path, Path]) -> None:
    """--home on the command, and `nettx --home D CMD`, for buy and the parties too."""
    for path, command in LEAVES:
        names = {p.name for p in command.params}
        if path in (("card", "seal"), ("card", "atr-list"), ("card", "info"),
                    ("card", "apdu"), ("conformance",)):
            continue  # these read no file of the home (a card, a database, a list)
        assert "home" in names, f"{' '.join(path)} has no --home"


def test_the_card_managers_ledger_lives_in_the_home_by_default(tmp_path: Path) -> None:
    """`issuer add-account` and `issuer accounts` (and `issuer serve`) without --db share
    HOME/parties/issuer.sqlite, with the home given before the subcommand or on it."""
    home = tmp_path / "home"
    ok(nettx("--home", home, "issuer", "add-account", "--expiry", "09/29", "--holder", HOLDER,
             "--name", "Alice", "--balance", "5000",
             env={"NETTX_CARD_NUMBER": "4970101234567890"}))
    ledger = home / "parties" / "issuer.sqlite"
    assert ledger.is_file() and (ledger.parent.stat().st_mode & 0o777) == 0o700
    listed = json.loads(ok(nettx("issuer", "accounts", "--home", home, "--json")).stdout)
    assert [a["holder"] for a in listed["accounts"]] == [HOLDER]
    missing = nettx("issuer", "accounts", "--home", tmp_path / "empty")
    assert missing.exit_code == 1 and "no ledger at" in missing.stderr


@pytest.mark.parametrize("path", [p for p, _ in LEAVES] + [("authority",), ()], ids=" ".join)
def test_dash_h_shows_the_help(path: tuple[str, ...]) -> None:
    result = ok(nettx(*path, "-h"))
    assert result.output.startswith("Usage:"), result.output


# -- Examples ---------------------------------------------------------------------------------


def examples_of(help_text: str) -> list[str]:
    _, sep, tail = help_text.partition("Examples:\n")
    assert sep, "no Examples section"
    lines = []
    for line in tail.splitlines():
        line = line.strip()
        if line.startswith("nettx "):
            lines.append(line.split("  #", 1)[0].strip())
    return lines


def check_parses(line: str) -> tuple[str, ...]:
    """The command path exists and every option it names is one of that command's (or a
    global one before the subcommand)."""
    words = shlex.split(line)[1:]
    path: list[str] = []
    command: click.Command = cli.main
    ctx_opts = {o for p in cli.main.params for o in (*p.opts, *p.secondary_opts)}
    while isinstance(command, click.Group):
        while words and words[0].startswith("-"):
            option = words.pop(0)
            assert option in ctx_opts, f"{line}: no global option {option}"
            param = next(p for p in cli.main.params if option in p.opts)
            if not getattr(param, "is_flag", False):
                words.pop(0)
        assert words, f"{line}: no command"
        name = words.pop(0)
        assert name in command.commands, f"{line}: no command {name!r}"
        command = command.commands[name]
        path.append(name)
    known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    for word in words:
        if word.startswith("--"):
            assert word.split("=", 1)[0] in known, f"{line}: {word} is not an option"
    return tuple(path)


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=" ".join)
def test_every_command_has_examples_that_parse(path: tuple[str, ...]) -> None:
    examples = examples_of(ok(nettx(*path, "--help")).output)
    assert examples, f"{' '.join(path)}: an empty Examples section"
    for line in examples:
        assert check_parses(line) == path, f"{line}: not an example of {' '.join(path)}"


def test_the_example_checker_catches_a_wrong_option() -> None:
    with pytest.raises(AssertionError, match="--no-such is not an option"):
        check_parses("nettx card info --no-such 1")
    with pytest.raises(AssertionError, match="no command 'infos'"):
        check_parses("nettx card infos")


# -- JSON output ------------------------------------------------------------------------------

CARD_INFO_KEYS = {"atr", "serial", "lifecycle", "holder", "applet_version", "scheme_version",
                  "k", "pin_tries", "pin_max", "puk_tries", "puk_max", "atc"}


def readme_keys(command: str) -> set[str]:
    """The keys README's "JSON output" section lists for COMMAND."""
    text = (REPO / "README.md").read_text()
    section = text.split("## JSON output", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"^- `{re.escape(command)}`: (.*?)(?=\n- |\n\n)", section,
                      re.MULTILINE | re.DOTALL)
    assert match, f"README's JSON output section does not list {command}"
    return set(re.findall(r"`(\w+)`", match.group(1)))


def test_card_info_json(card: tuple[Path, Path]) -> None:
    _, state = card
    doc = json.loads(ok(nettx("card", "info", "--reader", f"inprocess:{state}",
                              "--json")).stdout)
    assert set(doc) == CARD_INFO_KEYS <= readme_keys("nettx card info --json")
    assert doc["holder"] == HOLDER and doc["lifecycle"] == "operational" and doc["k"] == 4
    assert doc["atr"].startswith("3B")


def test_authority_list_json(card: tuple[Path, Path]) -> None:
    home, _ = card
    doc = json.loads(ok(nettx("--home", home, "authority", "list", "--json")).stdout)
    (entry,) = doc["identifiers"]
    assert set(entry) <= readme_keys("nettx authority list --json")
    assert entry["identifier"] == HOLDER and len(entry["card_serial"]) == 16


def test_card_apdu_json(card: tuple[Path, Path]) -> None:
    _, state = card
    select = "00A404000AF0455030373931393031"
    doc = json.loads(ok(nettx("card", "apdu", "--reader", f"inprocess:{state}", "--json",
                              select, "00CADF1100 = 6A88")).stdout)
    first, second = doc["exchanges"]
    assert set(first) <= readme_keys("nettx card apdu --json")
    assert first["sw"] == "9000" and first["command"] == select and first["data"]
    assert second["sw"] == "6A88" and second["expected"] is True
    # a mismatch: what ran is still printed, the error is one line on stderr
    result = nettx("card", "apdu", "--reader", f"inprocess:{state}", "--json", "00CADF1100")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["exchanges"][0]["expected"] is False
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_conformance_json(card: tuple[Path, Path]) -> None:
    _, state = card
    listed = json.loads(ok(nettx("conformance", "--list", "--json")).stdout)
    assert listed["checks"] and set(listed["checks"][0]) == {"check", "clause", "what"}
    check = listed["checks"][0]["check"]
    doc = json.loads(ok(nettx("conformance", "--reader", f"inprocess:{state}", "--check",
                              check, "--json")).stdout)
    assert set(doc) <= readme_keys("nettx conformance --json")
    assert doc["passed"] is True and [r["check"] for r in doc["results"]] == [check]
    assert sum(doc["counts"].values()) == 1


LONG_HOLDER = "holder:" + "a" * 57  # 64 bytes: the longest identifier


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    db = tmp_path / "bank.sqlite"
    ok(nettx("issuer", "add-account", "--db", db, "--expiry", "09/29", "--holder",
             LONG_HOLDER, "--name", "[bold]Alice[/bold]", "--balance", "100",
             env={"NETTX_CARD_NUMBER": "4970101234567890"}))
    return db


def test_issuer_accounts_json(ledger: Path) -> None:
    doc = json.loads(ok(nettx("issuer", "accounts", "--db", ledger, "--json")).stdout)
    (account,) = doc["accounts"]
    assert set(account) == readme_keys("nettx issuer accounts --json")
    assert account["holder"] == LONG_HOLDER and account["balance"] == 100
    assert account["card"].endswith("7890") and "4970" not in account["card"]
    assert account["blocked"] is False


def test_a_table_through_a_pipe_keeps_a_64_byte_identifier_whole(ledger: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "host.cli", "issuer", "accounts", "--db",
                          str(ledger)], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "COLUMNS"})
    assert run.returncode == 0, run.stderr
    assert LONG_HOLDER in run.stdout, run.stdout
    assert "[bold]Alice[/bold]" in run.stdout  # shown as written, not as markup
