"""README.md runs as written: every ```sh block, top to bottom, in a scratch copy of the repo.

The convention (also stated at the top of README.md's source):
- a block fenced ```sh is run; one fenced ```console or ```text is an illustration (prompts,
  output, commands that need your own files);
- a ```sh block whose fence also says `root` (```sh root) needs root, pcscd and vpcd (the
  private pcscd of vpcd_config/pcscd-vpcd): it runs when the PC/SC stack can (as root, as in
  CI); otherwise the other blocks run and the test then reports the root blocks as not run
  (a skip, or a failure under CI=true, as for every PC/SC test);
- every command must exit 0, except one written `! command`, which must fail: the test turns
  it into `if command; then exit 1; fi` (plain bash does not stop when `! command` succeeds,
  and `|| true` would accept either outcome);
- a block that starts servers in the background stops them itself (`kill %1 ...; wait`):
  every block runs in a process group of its own, and anything left in it afterwards fails
  the test (and is killed).

All blocks run in one bash (`set -euo pipefail`), so variables set in one block are seen by
the next, as in a reader's terminal. HOME, NETTX_HOME, TMPDIR and XDG_CACHE_HOME point into
the scratch directory; the repo's venv is first on PATH; no NETTX_* secret or
PCSCLITE_CSOCK_NAME is inherited.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import IN_CI, pcsc_stack_missing

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BLOCK_TIMEOUT = 120  # seconds per block (the transaction block, three servers: about 10)
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    line: int  # where the block's first command is in README.md
    needs_root: bool
    script: str  # as written in the README


def readme_blocks(text: str) -> list[Block]:
    blocks = []
    for match in FENCE.finditer(text):
        info = match.group(1).split()
        if not info or info[0] != "sh":
            continue
        line = text.count("\n", 0, match.start(2)) + 1
        blocks.append(Block(line, "root" in info[1:], match.group(2)))
    return blocks


def expect_failures(script: str, where: int) -> str:
    """`! command` (with its continuation lines) -> `if command` / `then ... exit 1; fi`."""
    lines = script.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("! "):
            out.append(line)
            i += 1
            continue
        first = i
        while lines[i].rstrip().endswith("\\"):  # the command goes on on the next line
            i += 1
        command = "\n".join(lines[first:i + 1])
        out.append("if " + command[2:])
        out.append(f"then echo 'README.md line {where + first}: this command was expected to "
                   "fail and did not' >&2; exit 1; fi")
        i += 1
    return "\n".join(out) + "\n"


def test_expect_failures_rewrites_a_continued_command() -> None:
    script = "echo a\n! nettx x \\\n  --y  # note\necho b\n"
    rewritten = expect_failures(script, 10)
    assert "if nettx x \\\n  --y  # note\nthen echo 'README.md line 11:" in rewritten
    assert rewritten.startswith("echo a\n") and rewritten.endswith("echo b\n")
    # the rewrite keeps its meaning: a command that succeeds where failure was expected stops
    ran = subprocess.run(["bash", "-euo", "pipefail", "-c", expect_failures("! true\n", 1)],
                         capture_output=True, text=True)
    assert ran.returncode == 1 and "expected to fail" in ran.stderr
    ran = subprocess.run(["bash", "-euo", "pipefail", "-c", expect_failures("! false\n", 1)],
                         capture_output=True, text=True)
    assert ran.returncode == 0


def test_the_readme_has_run_blocks_and_no_placeholders() -> None:
    text = README.read_text()
    blocks = readme_blocks(text)
    assert len(blocks) >= 5
    for block in blocks:
        # no path outside the repo, no elided data, no "[--option | --other]" synopsis
        assert "../" not in block.script, block.line
        assert "..." not in block.script, block.line
        assert not re.search(r"\[--", block.script), block.line
        # a trailing `|| true` accepts either outcome: say `! command` instead
        assert not re.search(r"\|\|\s*true\b", block.script), block.line


def scratch_copy(dest: Path) -> Path:
    """The repo's tracked files as they are now (a fresh clone of this working tree)."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def scratch_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NETTX_") and k != "PCSCLITE_CSOCK_NAME"}
    venv_bin = Path(sys.executable).parent
    env.update(HOME=str(home), NETTX_HOME=str(home / ".nettx"), TMPDIR=str(home / "tmp"),
               XDG_CACHE_HOME=str(home / ".cache"),
               PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}")
    (home / "tmp").mkdir(parents=True)
    return env


def leftovers(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def pcscd_left_running(work: Path, env: dict[str, str]) -> str:
    """Stop a pcscd a PC/SC block left running (it leaves the block's process group through
    its namespaces); returns a line saying so, which fails the test, or ''."""
    script = work / "vpcd_config" / "pcscd-vpcd"
    status = subprocess.run([str(script), "status"], cwd=work, env=env, capture_output=True,
                            text=True, timeout=30)
    if status.returncode == 3:  # stopped
        return ""
    subprocess.run([str(script), "stop"], cwd=work, env=env, capture_output=True, timeout=60)
    return f"\nLEFT RUNNING (stopped now): pcscd {status.stdout.strip()}"


@pytest.mark.timeout(900)  # the whole walk-through: about 40 s on an idle machine
def test_readme_runs_as_written(tmp_path: Path) -> None:
    if not shutil.which("nettx", path=str(Path(sys.executable).parent)):
        pytest.fail("nettx is not installed in this venv (make test-deps)")
    blocks = readme_blocks(README.read_text())
    no_pcsc = pcsc_stack_missing()
    work = scratch_copy(tmp_path / "nettx")
    env = scratch_env(tmp_path / "home")
    not_run = [b.line for b in blocks if b.needs_root and no_pcsc]
    if not_run and IN_CI:
        pytest.fail(f"README blocks at lines {not_run} need the PC/SC stack: {no_pcsc}")
    state = tmp_path / "shell-state"  # variables carried from one block to the next
    state.write_text("")
    for block in blocks:
        if block.needs_root and no_pcsc:
            continue
        script = ("set -euo pipefail\n"
                  f"source {state}\n"
                  f"{expect_failures(block.script, block.line)}"
                  f"declare -px | grep -v -e ' -[a-zA-Z]*r[a-zA-Z]* ' > {state}\n")
        # output to a file, not a pipe: a server the block failed to stop would hold a
        # pipe open, and the test would wait for it instead of reporting it
        log = tmp_path / f"block-{block.line}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(["bash", "-c", script], cwd=work, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                proc.wait(timeout=BLOCK_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                if block.needs_root:
                    pcscd_left_running(work, env)
                pytest.fail(f"README.md block at line {block.line} still running after "
                            f"{BLOCK_TIMEOUT} s:\n{log.read_text()}")
        output = log.read_text()
        if block.needs_root:
            output += pcscd_left_running(work, env)
        left = False
        for _ in range(50):  # a server stopped by the block may take a moment to exit
            left = leftovers(proc.pid)
            if not left:
                break
            time.sleep(0.1)
        if left:
            os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == 0, (
            f"README.md block at line {block.line} failed (exit {proc.returncode}):\n{output}")
        assert not left and "LEFT RUNNING" not in output, (
            f"README.md block at line {block.line} left processes running (killed now):"
            f"\n{output}")
    if not_run:
        pytest.skip(f"every other block ran; the blocks at lines {not_run} need the PC/SC "
                    f"stack: {no_pcsc}")
