"""Every `nettx` command against a corpus of bad inputs: none may end in a traceback, and
none may exit 0.

The commands are found by walking click's command tree, so a new command is covered the day
it is added: each parameter is classified by its name (a file it reads, a reader, an
identifier, an endpoint, a number, hex); a command with a required parameter the test does
not know how to fill, or with no bad input at all, fails the test until it is taught.

Each case starts from arguments that would work (a centre, row files, a personalised card
and its pairing, in a fresh copy per case) and spoils exactly one. Runs are in this process
(CliRunner); a card process the command starts writes to the real descriptor 2, which
`capfd` sees, so a child's traceback is caught too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from host.cli import main as cli
from host.cli.examples import leaf_commands

HOLDER, SELLER, ISSUER, DELIVERY = "holder:h", "seller:s", "issuer:i", "delivery:d"
SECRETS = {"NETTX_PIN": "1234", "NETTX_PUK": "12345678", "NETTX_NEW_PIN": "4321",
           "NETTX_CARD_NUMBER": "4111111111111111"}
CASE_TIMEOUT = 15  # seconds: a bad input must fail, not serve forever




@dataclass(frozen=True)
class World:
    """Good inputs, in a directory each case copies."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def state(self) -> Path:
        return self.root / "card.json"

    def row(self, ident: str) -> Path:
        return self.home / "rows" / f"{ident.replace(':', '_')}.row.json"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    w = World(tmp_path_factory.mktemp("world"))
    runner = CliRunner()
    for args in (["authority", "init", "--home", w.home, "--k", "4"],
                 ["authority", "issue", "--home", w.home, SELLER, ISSUER, DELIVERY],
                 ["card", "new", "--home", w.home, "--state", w.state],
                 ["authority", "personalise", "--home", w.home, "--holder", HOLDER,
                  "--reader", f"inprocess:{w.state}"]):
        result = runner.invoke(cli.main, [str(a) for a in args], env=SECRETS)
        assert result.exit_code == 0, result.output
    (w.root / "catalogue.json").write_text(json.dumps(
        {"currency": "EUR", "items": [{"number": "1", "name": "tea", "unit_price": 250}]}))
    (w.root / "plain.txt").write_text("hello")
    return w


# -- the corpus -------------------------------------------------------------------------------


def bad_files(d: Path, good_json: Path | None = None) -> dict[str, Path]:
    """Files no reader of a nettx file may accept (and none may crash on)."""
    files = {"garbage": b"\x00\xffgarbage\n", "empty": b"", "wrong-type-list": b"[1, 2]",
             "wrong-type-object": b'{"format": 1, "serial": 5, "row_hex": "ab", "id": [],'
                                  b' "items": 3, "master_upper_triangle_hex": {"a": 1}}',
             "not-utf8": "état".encode("latin-1")}
    if good_json is not None:
        raw = good_json.read_bytes()
        files["truncated"] = raw[: len(raw) // 2]
        try:
            doc = json.loads(raw)
        except ValueError:  # a binary file (the centre's master): truncation is its case
            doc = None
        if isinstance(doc, dict):  # every field of the good file turned into a wrong type
            for value in ("x", -1, None, [], 10**40):
                files[f"fields-{value!r}"] = json.dumps({k: value for k in doc}).encode()
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, raw in files.items():
        path = d / f"bad-{name}"
        path.write_bytes(raw)
        out[name] = path
    out["missing"] = d / "no-such-file"
    # tests run as root, where mode 000 does not stop a read: a directory does
    out["unreadable"] = d / "a-directory"
    out["unreadable"].mkdir(exist_ok=True)
    return out


# parameters that name a file the command reads: name -> the good file in a world copy
def good_input_file(w: World, name: str) -> Path | None:
    return {"state": w.state, "master_file": w.home / "authority" / "master.bin",
            "key_file": w.row(SELLER), "catalogue": w.root / "catalogue.json",
            "pairing_file": next(
                (w.home / "cards").glob("*.pairing.json"), None),
            "db": None, "state_key_file": None, "pin_file": None, "puk_file": None,
            "new_pin_file": None, "card_number_file": None, "script": None,
            "path": None, "report_path": None, "out": None}.get(name)


FILE_PARAMS = {"state", "master_file", "key_file", "catalogue", "in_path", "pairing_file",
               "db", "state_key_file", "pin_file", "puk_file", "new_pin_file",
               "card_number_file", "script"}
# files a command creates when they are missing, or may be empty (a new SQLite database)
CREATED = {("card", "new"): {"state"}, ("card", "serve"): {"state"},
           ("authority", "personalise"): {"state"}}
DB_CREATED = {("issuer", "add-account"), ("issuer", "serve"), ("seller", "serve"),
              ("delivery", "serve")}
# files whose content may be anything: only a missing or unreadable one is bad
ANY_CONTENT = {"in_path"}
# commands that do not read these parameters unless asked: the case sets the flag
NEEDS = {("card", "atr-list"): ["--install"]}

IDENTIFIER_PARAMS = {"identifiers", "id_a", "id_b", "holder", "peer", "holder_id",
                     "issuer_id", "delivery_id", "seller_id"}
ENDPOINT_PARAMS = {"listen", "issuer_at", "delivery_at", "seller_at", "vpcd"}
BAD_IDENTIFIERS = ["", "x" * 65]
BAD_ENDPOINTS = ["127.0.0.1:99999", "127.0.0.1:-1", "nohostport", ":80"]
BAD_HEX = ["zz", "0", "00 A4 04"]
HEX_PARAMS = {"hex_in", "aid", "pin_ref", "protected", "apdus"}


@dataclass(frozen=True)
class Case:
    command: tuple[str, ...]
    param: str
    label: str
    value: object  # str, Path, or a tuple for a variadic argument


def good_values(w: World, command: tuple[str, ...], cmd: click.Command) -> dict[str, object]:
    """Arguments that would run: required parameters, plus the card or key the command
    works with."""
    names = {p.name for p in cmd.params}
    values: dict[str, object] = {}
    good = {"identifiers": ("other:x",), "id_a": SELLER, "id_b": ISSUER, "holder": HOLDER,
            "peer": SELLER, "issuer_id": ISSUER, "delivery_id": DELIVERY, "seller_id": SELLER,
            "listen": "127.0.0.1:0", "issuer_at": "127.0.0.1:9", "delivery_at": "127.0.0.1:9",
            "seller_at": "127.0.0.1:9", "db": w.root / "party.db",
            "catalogue": w.root / "catalogue.json", "expiry": "12/30", "name": "N",
            "balance": "100", "items": ("1",), "deliver_to": "D", "state": w.state,
            "path": w.root / "list.txt"}
    if command == ("authority", "personalise"):
        good["state"] = w.root / "new-card.json"  # a blank card made on the spot
    if command == ("card", "new"):
        good["state"] = w.root / "another.json"
    for p in cmd.params:
        if p.required:
            if p.name not in good:
                pytest.fail(f"{' '.join(command)}: teach this test a good --{p.name}")
            values[p.name] = good[p.name]
    if "key_file" in names:
        values["key_file"] = w.row(SELLER)
    elif "reader_spec" in names and "state" not in values:
        values["reader_spec"] = f"inprocess:{w.state}"
    if "max_amount" in names:
        values["max_amount"] = "100"
    if "home" in names:
        values["home"] = w.home
    if command == ("card", "encrypt"):
        values["text"] = "hi"
    if command == ("card", "decrypt"):
        values["hex_in"] = "00" * 40
    if command == ("card", "apdu"):
        values["apdus"] = ("00A4040000",)
    return values


def cases_for(w: World, command: tuple[str, ...], cmd: click.Command,
              corpus_dir: Path) -> list[Case]:
    out: list[Case] = []
    files = bad_files(corpus_dir)
    for p in cmd.params:
        if p.name is None or p.name == "help":
            continue
        name = p.name
        if name in FILE_PARAMS or (name == "path" and command in NEEDS):
            good = good_input_file(w, name)
            corpus = bad_files(corpus_dir / name, good) if good else files
            for label, path in corpus.items():
                if label == "missing" and name in CREATED.get(command, set()) | {"db"}:
                    continue
                if name == "db" and (label == "empty" or
                                     (label == "missing" and command in DB_CREATED)):
                    continue  # an empty file is an empty SQLite database; a missing one new
                if name == "path" and label != "unreadable":
                    continue  # a list file is added to, whatever it held
                if name in ANY_CONTENT and label not in ("missing", "unreadable"):
                    continue  # any bytes are a plaintext
                if name in CREATED.get(command, set()) and label != "unreadable" and \
                        command != ("card", "serve"):
                    label = f"existing {label}"
                out.append(Case(command, name, label, path))
        elif name == "reader_spec":
            for label, path in files.items():
                out.append(Case(command, name, f"inprocess {label}", f"inprocess:{path}"))
            for spec in ("embedded:99999", "embedded:x", "bogus:1", "serial:/no/such/tty",
                         "inprocess:"):
                out.append(Case(command, name, spec, spec))
        elif name == "home":
            out.append(Case(command, name, "a file", files["garbage"]))
        elif name in IDENTIFIER_PARAMS:
            for bad in BAD_IDENTIFIERS:
                value: object = (bad,) if p.multiple or p.nargs == -1 else bad
                out.append(Case(command, name, f"identifier {bad[:8]!r}", value))
        elif name in ENDPOINT_PARAMS:
            for bad in BAD_ENDPOINTS:
                out.append(Case(command, name, bad, bad))
        elif isinstance(p.type, click.IntRange) or p.type is click.INT:
            top = getattr(p.type, "max", None)
            for bad in ("-5", "x", *([] if top is None else [str(top + 1)])):
                out.append(Case(command, name, f"number {bad}", bad))
        elif name in HEX_PARAMS:
            for bad in BAD_HEX:
                value = (bad,) if p.nargs == -1 else bad
                out.append(Case(command, name, f"hex {bad!r}", value))
        elif name == "expiry":
            out.append(Case(command, name, "13/30", "13/30"))
    return out


def argv(command: tuple[str, ...], cmd: click.Command, values: dict[str, object]) -> list[str]:
    args = [*command, *NEEDS.get(command, [])]
    positional: list[str] = []
    for p in cmd.params:
        if p.name not in values:
            continue
        value = values[p.name]
        items = value if isinstance(value, tuple) else (value,)
        if isinstance(p, click.Argument):
            positional += [str(v) for v in items]
        else:
            for v in items:
                args += [p.opts[0], str(v)]
    return [*args, "--", *positional] if positional else args


def copy_world(w: World, dest: Path) -> World:
    shutil.copytree(w.root, dest, symlinks=True)
    return World(dest)


ALL = list(leaf_commands(cli.main))
# what a party reads only when its key is on a card
CARD_PARAMS = {"state", "reader_spec", "pairing_file", "pin_file", "pin_fd", "home",
               "holder_id", "state_key_file", "state_key_fd"}


pytestmark = pytest.mark.usefixtures("restore_process_state")


TIMED_OUT: list[bool] = []


def _alarm(signum: int, frame: object) -> None:
    TIMED_OUT.append(True)
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None):
        os.kill(os.getpid(), signal.SIGTERM)  # a server is running: stop it as a user would
    else:
        raise TimeoutError("the command did not fail within the case timeout")


@pytest.mark.parametrize("command", [c for c, _ in ALL], ids=" ".join)
def test_every_command_refuses_bad_input_in_one_line(
        command: tuple[str, ...], world: World, tmp_path: Path,
        capfd: pytest.CaptureFixture[str]) -> None:
    cmd = dict(ALL)[command]
    cases = cases_for(world, command, cmd, tmp_path / "corpus")
    assert cases, f"{' '.join(command)} has no bad input this test knows: teach it one"
    failures: list[str] = []
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for n, case in enumerate(cases):
            w = copy_world(world, tmp_path / f"case{n}")
            values = good_values(w, command, cmd)
            value = case.value
            if isinstance(value, Path) and value.is_relative_to(world.root):
                value = w.root / value.relative_to(world.root)
            if case.param in CARD_PARAMS and "key_file" in values:
                # a party with a row file never reads these: spoil them on its card instead
                values.pop("key_file")
                values["reader_spec"] = f"inprocess:{w.state}"
            if case.param in ("state", "reader_spec"):  # the card comes from this one
                values.pop("reader_spec" if case.param == "state" else "state", None)
            values[case.param] = value
            args = argv(command, cmd, values)
            TIMED_OUT.clear()
            signal.alarm(CASE_TIMEOUT)
            try:
                result = CliRunner().invoke(cli.main, args, env=SECRETS)
            finally:
                signal.alarm(0)
            child = capfd.readouterr()
            seen = result.output + child.err + child.out
            what = f"{' '.join(args)}  [{case.param}: {case.label}]"
            if TIMED_OUT:
                failures.append(f"{what}: still running after {CASE_TIMEOUT} s")
            elif result.exception is not None and not isinstance(result.exception,
                                                                 SystemExit):
                failures.append(f"{what}: raised {result.exception!r}")
            elif "Traceback" in seen:
                failures.append(f"{what}: traceback:\n{seen}")
            elif result.exit_code == 0:
                failures.append(f"{what}: exit status 0 for bad input:\n{result.output}")
            elif not result.output.strip():
                failures.append(f"{what}: failed without saying why")
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures)


# -- the cases issue 12 reported, each with the reason it must give ---------------------------


def spoilt_state(w: World, d: Path, **changes: object) -> Path:
    doc = json.loads(w.state.read_text())
    doc.update(changes)
    path = d / "spoilt.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(("changes", "reason"), [
    ({"serial": "zz"}, "'serial' is not hex"),
    ({"pin_tries": "x"}, "'pin_tries' must be an integer"),
    ({"pin_tries": 99}, "'pin_tries' is 99, expected 0..3"),
    ({"atc_reserved": True}, "'atc_reserved' must be an integer"),
    ({"atc": 5}, "unknown field 'atc'"),  # format 1's name, in a format 2 file
    ({"row": "00" * 33}, "'row' must be a multiple of 32 bytes"),
    ({"lifecycle": 9}, "'lifecycle' 9 is not a life cycle"),
    ({"card_auth_key": "00"}, "'card_auth_key' has 1 bytes"),
])
def test_a_spoilt_state_never_reaches_the_applet(world: World, tmp_path: Path, changes: dict,
                                                 reason: str,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    state = spoilt_state(world, tmp_path, **changes)
    for args in (["card", "info", "--reader", f"inprocess:{state}"],
                 ["card", "info", "--state", str(state)]):
        result = CliRunner().invoke(cli.main, args)
        assert result.exit_code == 1, result.output
        assert result.output.startswith("error: ") and reason in result.output, result.output
        assert result.output.count("\n") == 1
        assert "Traceback" not in capfd.readouterr().err


def test_a_list_for_a_master_says_what_a_master_is(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text("[1, 2]")
    result = CliRunner().invoke(cli.main, ["authority", "init", "--home", str(tmp_path / "h"),
                                           "--master", str(tmp_path / "list.json")])
    assert result.exit_code == 1
    assert "expected a JSON object, found list" in result.output
    assert "list indices" not in result.output


def test_a_corrupt_transport_key_is_named(world: World, tmp_path: Path) -> None:
    w = copy_world(world, tmp_path / "w")
    (w.home / "authority" / "transport.key").write_text("zz\n")
    result = CliRunner().invoke(cli.main, ["card", "new", "--home", str(w.home), "--state",
                                           str(tmp_path / "c.json")])
    assert result.exit_code == 1
    assert "transport.key: not a transport key" in result.output


def test_an_embedded_port_out_of_range_is_refused() -> None:
    result = CliRunner().invoke(cli.main, ["card", "info", "--reader", "embedded:99999"])
    assert result.exit_code == 1 and "port 1..65535" in result.output
