"""`donorcast --help` imports no command module, and every help page shows click's metavars."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from infra.cli import COMMANDS, build_app
from infra.cli_group import docstring, load_command

REPO_ROOT = Path(__file__).resolve().parents[2]
# the command modules themselves, and what they pull in (the bare packages above them are docstrings)
HEAVY = sorted({target.split(":")[0] for target in COMMANDS.values()} | {
    "producers.readers", "infra.settings", "infra.kafka", "infra.postgres", "sklearn", "torch", "numpy", "faust",
    "pydantic_settings", "selenium", "onnxruntime", "transformers"})


def test_root_help_lists_every_command_without_importing_them(tmp_path: Path) -> None:
    probe = ("import json, sys\n"
             "from infra.cli import main\n"
             "sys.argv = ['donorcast', '--help']\n"
             "try:\n    main()\nexcept SystemExit as exit:\n    code = exit.code\n"
             f"heavy = sorted(m for m in sys.modules if m in {HEAVY!r})\n"
             "print(json.dumps({'code': code, 'heavy': heavy}), file=sys.stderr)\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DONORCAST_")}, "PYTHONPATH": str(REPO_ROOT),
           "COLUMNS": "200"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    print(f"\n--help took {time.perf_counter() - started:.2f} s wall on this machine")
    verdict = json.loads(result.stderr.strip().splitlines()[-1])
    assert verdict == {"code": 0, "heavy": []}, result.stderr
    listed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("│ ") and len(line.split()) > 2}
    assert set(COMMANDS) | {"up", "down", "status", "db"} <= listed, result.stdout
    assert "<bool>" not in result.stdout and "{" not in result.stdout


def test_help_read_from_source_is_the_commands_own() -> None:
    for name, target in COMMANDS.items():
        command = load_command(name, target)
        assert command is not None, name
        assert docstring(target) == command.help, name


def test_command_help_shows_click_metavars() -> None:
    runner = CliRunner()
    ingest = runner.invoke(build_app(), ["ingest", "--help"], env={"COLUMNS": "200"})
    assert ingest.exit_code == 0, ingest.output
    assert "Usage: donorcast ingest [OPTIONS] PATHS..." in ingest.output
    (argument,) = [line for line in ingest.output.splitlines() if "PATHS..." in line and "chat files" in line]
    assert argument.split()[1:4] == ["*", "PATHS...", "PATH"]
    (batch,) = [line for line in ingest.output.splitlines() if "--batch-size" in line]
    assert batch.split()[1:3] == ["--batch-size", "INTEGER"]

    status = runner.invoke(build_app(), ["status", "--help"], env={"COLUMNS": "200"})
    (flag,) = [line for line in status.output.splitlines() if "--json" in line]
    assert flag.split()[1:3] == ["--json", "the"]  # a flag takes no value: no type after it
    fit = runner.invoke(build_app(), ["fit", "--help"], env={"COLUMNS": "200"})
    assert "Usage: donorcast fit [OPTIONS] [FILES]..." in fit.output
    for output in (ingest.output, status.output, fit.output):
        assert "<" not in output.replace("<stream_id>", "").replace("<time>", "") and "{" not in output


def test_a_mistyped_command_is_suggested_from_all_commands() -> None:
    result = CliRunner().invoke(build_app(), ["ingset"])
    assert result.exit_code == 2
    assert "No such command 'ingset'. Did you mean 'ingest'?" in result.output
