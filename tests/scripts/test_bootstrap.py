"""scripts/bootstrap's output, run on a copy of the repo's inputs with a stand-in Python and pip
(the real install takes minutes: `make test` on a fresh clone runs that).

The stand-in `python -m venv DIR` makes DIR/bin/python (runs nothing) and DIR/bin/pip, which
writes some output, tells whether its stdout was a terminal, and succeeds (or fails when
FAKE_PIP_FAIL is set). `id -u` says 1000, so no apt-get is ever run.
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INPUTS = [
    "scripts/bootstrap",
    "pyproject.toml",
    "setup.py",
    "constraints.txt",
    "tests/peers/mint-requirements.txt",
]

FAKE_PIP = """\
#!/usr/bin/env bash
if [ -t 1 ]; then echo tty >>"$FAKE_RECORD"; else echo pipe >>"$FAKE_RECORD"; fi
echo "Collecting fake-package"
if [ -n "${FAKE_PIP_FAIL:-}" ]; then
  echo "ERROR: No matching distribution found for fake-package" >&2
  exit 1
fi
echo "Successfully installed alpha-1.0 beta-2.0 gamma-3.0"
"""
FAKE_PYTHON = """\
#!/usr/bin/env bash
# python -m venv DIR
if [ "$1" = -m ] && [ "$2" = venv ]; then
  mkdir -p "$3/bin"
  printf '#!/bin/sh\\nexit 0\\n' >"$3/bin/python"
  cp "$FAKE_BIN/pip" "$3/bin/pip"
  chmod +x "$3/bin/python" "$3/bin/pip"
fi
"""
FAKE_ID = "#!/bin/sh\necho 1000\n"

VENV_STEP = (
    "bootstrap: installing Paygress and its dev tools into .venv (pip; 1-3 min the first time)"
)
MINT_STEP = (
    "bootstrap: installing the nutshell Cashu mint and wallet into .venv-mint (pip; 1-2 min the "
    "first time)"
)


@dataclass
class Repo:
    root: Path
    env: dict[str, str]
    record: Path

    def pip_calls(self) -> list[str]:
        return self.record.read_text().split() if self.record.exists() else []


@pytest.fixture
def repo(tmp: Path) -> Repo:
    root = tmp / "repo"
    for name in INPUTS:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    (root / "protos").mkdir()
    (root / "protos" / "generate.py").write_text("")
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for name, text in (("pip", FAKE_PIP), ("python3", FAKE_PYTHON), ("id", FAKE_ID)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    # apt-get must never run: a stand-in that fails loudly if it does.
    (bin_dir / "apt-get").write_text("#!/bin/sh\necho 'apt-get was run' >&2\nexit 99\n")
    (bin_dir / "apt-get").chmod(0o755)
    record = tmp / "pip-calls"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "PYTHON": str(bin_dir / "python3"),
        "FAKE_BIN": str(bin_dir),
        "FAKE_RECORD": str(record),
    }
    return Repo(root, env, record)


def bootstrap(repo: Repo, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(repo.root / "scripts" / "bootstrap")],
        cwd=repo.root,
        env={**repo.env, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def lines(text: str) -> list[str]:
    """The bootstrap lines, with the step times made comparable."""
    return [re.sub(r"done in \d+ s", "done in N s", line) for line in text.splitlines()]


def test_a_first_run_prints_one_plain_line_per_step(repo: Repo) -> None:
    done = bootstrap(repo)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert lines(done.stderr) == [
        VENV_STEP,
        "bootstrap:   pip's output: .venv/install.log",
        "bootstrap:   done in N s, 3 packages",
        MINT_STEP,
        "bootstrap:   pip's output: .venv-mint/install.log",
        "bootstrap:   done in N s, 6 packages",
    ]
    assert "\x1b" not in done.stderr
    # pip's own output is in the logs, not in the way.
    assert repo.pip_calls() == ["pipe", "pipe", "pipe"]
    assert "Collecting fake-package" in (repo.root / ".venv" / "install.log").read_text()
    assert "Collecting" not in done.stderr


def test_a_second_run_has_nothing_to_do_and_says_nothing(repo: Repo) -> None:
    assert bootstrap(repo).returncode == 0
    again = bootstrap(repo)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert len(repo.pip_calls()) == 3


def test_a_failing_install_shows_pips_output_and_stops(repo: Repo) -> None:
    done = bootstrap(repo, FAKE_PIP_FAIL="1")
    assert done.returncode == 1
    assert "ERROR: No matching distribution found for fake-package" in done.stderr
    assert done.stderr.rstrip().endswith(
        "bootstrap: failed: env PIP_CONSTRAINT="
        f"{repo.root}/constraints.txt .venv/bin/pip install -e .[dev]"
    )
    assert not (repo.root / ".venv" / ".stamp").exists()  # tried again next time
    assert not (repo.root / ".venv-mint").exists()


def test_on_a_terminal_pip_writes_to_it(repo: Repo) -> None:
    """stderr a terminal: pip gets the terminal (its progress bars), the step lines stay."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [str(repo.root / "scripts" / "bootstrap")],
        cwd=repo.root,
        env=repo.env,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the script is done
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    assert proc.wait(timeout=10) == 0
    text = seen.decode().replace("\r\n", "\n")
    assert repo.pip_calls() == ["tty", "tty", "tty"]
    assert "Collecting fake-package" in text
    pip = ["Collecting fake-package", "Successfully installed alpha-1.0 beta-2.0 gamma-3.0"]
    assert lines(text) == [
        VENV_STEP,
        *pip,
        "bootstrap:   done in N s",
        MINT_STEP,
        *pip,
        *pip,
        "bootstrap:   done in N s",
    ]
