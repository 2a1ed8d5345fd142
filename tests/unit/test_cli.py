"""The CLI in-process (``--backend local``, no Ray): results, tables, and one-line errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image as PILImage
from support.cli import run
from support.images import encode, noisy, photo, png_bomb


@pytest.fixture
def jpeg(tmp_path):
    path = tmp_path / "in.jpg"
    path.write_bytes(encode(noisy(photo(320, 240), 15), "JPEG", quality=92))
    return path


def test_run_writes_the_result_and_prints_tables(capsys, tmp_path, jpeg):
    adj = tmp_path / "adj.json"
    adj.write_text(json.dumps({"master": {"strength": 0.8},
                               "shifter": {"resize": {"width": 160, "mode": "fit"}},
                               "encoder": {"quality": 85}}))
    out = tmp_path / "out.webp"
    code, stdout, _ = run(capsys, "run", str(jpeg), "-a", str(adj), "-o", str(out),
                          "--backend", "local")
    assert code == 0
    img = PILImage.open(out)
    assert img.format == "WEBP" and img.size == (160, 120)
    for word in ("master/nlmeans", "master/select", "critical path", "QC picked", "wrote"):
        assert word in stdout
    assert not list(tmp_path.glob(".out.webp.*"))  # no temp file left behind


def test_inline_adjustments_and_default_output(capsys, jpeg):
    code, _, err = run(capsys, "run", str(jpeg), "-a", '{"master": {"algorithm": "guided"}}',
                       "-f", "png", "--backend", "local")
    assert code == 0, err
    out = jpeg.with_name("in.out.png")
    assert np.asarray(PILImage.open(out)).shape == (240, 320, 3)


def test_listings(capsys):
    code, out, _ = run(capsys, "operators")
    assert code == 0 and "nlmeans" in out and "qc-residual" in out
    code, out, _ = run(capsys, "pipelines")
    assert code == 0 and "denoised-multiformat*" in out and "thumbnail" in out


def bad_cases(tmp_path, jpeg):
    def file(name: str, data: bytes) -> str:
        (tmp_path / name).write_bytes(data)
        return str(tmp_path / name)

    good = str(jpeg)
    return {
        "missing file": (["run", str(tmp_path / "nope.jpg")], "no such file"),
        "folder": (["run", str(tmp_path)], "is a folder"),
        "zero bytes": (["run", file("empty.jpg", b"")], "[empty_image]"),
        "not an image": (["run", file("notes.jpg", b"shopping list")], "[corrupt_image]"),
        "truncated": (["run", file("half.jpg", jpeg.read_bytes()[:3000])], "truncated"),
        "bomb": (["run", file("bomb.png", png_bomb())], "[image_too_large]"),
        "unsupported input": (["run", file("a.gif", encode(photo(8, 8), "GIF"))],
                              "[unsupported_image_format]"),
        "bad json": (["run", good, "-a", "{not json"], "not valid JSON"),
        "json not object": (["run", good, "-a", file("a.json", b"[1]")], "JSON object"),
        "missing adjustments file": (["run", good, "-a", "nope.json"], "no such file"),
        "unknown algorithm": (["run", good, "-a", '{"master": {"algorithm": "x"}}'],
                              "[unknown_algorithm]"),
        "unknown parameter": (["run", good, "-a", '{"master": {"strenght": 1}}'],
                              "[unknown_parameter] adjustments.master.strenght"),
        "mistyped parameter": (["run", good, "-a", '{"encoder": {"quality": "best"}}'],
                               "[invalid_parameter] adjustments.encoder.quality"),
        "crop outside": (["run", good, "-a",
                          '{"shifter": {"crop": {"x": 0, "y": 0, "width": 999, "height": 9}}}'],
                         "[invalid_geometry]"),
        "resize to zero": (["run", good, "-a", '{"shifter": {"resize": {"width": 0}}}'],
                           "[invalid_parameter]"),
        "negative resize": (["run", good, "-a", '{"shifter": {"resize": {"height": -5}}}'],
                            "[invalid_parameter]"),
        "unsupported output": (["run", good, "-f", "gif"], "[unsupported_output_format]"),
        "unknown pipeline": (["run", good, "-p", "sharpen"], "[unknown_pipeline]"),
        "bad pipeline file": (["run", good, "--pipeline-file",
                               file("p.yaml", b"pipeline: p\nstages: [{name: a, operator: b}]")],
                              "stage 'a': unknown operator 'b'"),
    }


CASES = ["missing file", "folder", "zero bytes", "not an image", "truncated", "bomb",
         "unsupported input", "bad json", "json not object", "missing adjustments file",
         "unknown algorithm", "unknown parameter", "mistyped parameter", "crop outside",
         "resize to zero", "negative resize", "unsupported output", "unknown pipeline",
         "bad pipeline file"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_nonzero(capsys, tmp_path, jpeg, case):
    argv, words = bad_cases(tmp_path, jpeg)[case]
    code, stdout, stderr = run(capsys, *argv, "--backend", "local")
    assert code != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tilemore: "), stderr
    assert words in lines[0]
    assert "Traceback" not in stderr + stdout
    assert not list(tmp_path.glob("*.out.*"))  # nothing written


def test_unexpected_errors_hint_at_debug(capsys, tmp_path, jpeg):
    from support.pipelines import OPERATORS
    pf = tmp_path / "boom.yaml"
    pf.write_text(f"pipeline: boom\noperator_modules: ['{OPERATORS}']\nstages:\n"
                  "  - {name: decode, operator: decode}\n  - {name: x, operator: explode}\n"
                  "  - {name: encoder, operator: encoder}\n")
    argv = ["run", str(jpeg), "-p", "boom", "--pipeline-file", str(pf), "--backend", "local"]
    code, _, stderr = run(capsys, *argv)
    assert code == 1 and "x (explode): the operator broke" in stderr and "--debug" in stderr
    code, _, stderr = run(capsys, "--debug", *argv)
    assert "Traceback" in stderr and "ZeroDivisionError" in stderr


def test_output_png_roundtrip_is_exact(capsys, tmp_path):
    src = photo(64, 48)
    path = tmp_path / "in.png"
    path.write_bytes(encode(src, "PNG"))
    out = tmp_path / "o.png"
    code, _, err = run(capsys, "run", str(path), "-p", "thumbnail", "-o", str(out),
                       "--backend", "local")
    assert code == 0, err
    assert np.array_equal(np.asarray(PILImage.open(io.BytesIO(out.read_bytes()))), src)


def test_contact_sheet_shows_input_and_every_candidate(capsys, tmp_path, jpeg):
    sheet = tmp_path / "sheet.png"
    code, _, err = run(capsys, "run", str(jpeg), "-o", str(tmp_path / "o.jpg"),
                       "--contact-sheet", str(sheet), "--backend", "local")
    assert code == 0, err
    img = PILImage.open(sheet)
    assert img.height > 240 and img.width > 4 * 320  # input + three candidates at 1:1


def test_contact_sheet_needs_a_qc_stage(capsys, tmp_path, jpeg):
    code, _, err = run(capsys, "run", str(jpeg), "-p", "thumbnail", "--contact-sheet",
                       str(tmp_path / "s.png"), "--backend", "local")
    assert code == 1 and "no QC stage" in err


# -- CLI hygiene ------------------------------------------------------------------------------


def test_debug_is_accepted_after_the_subcommand(capsys, tmp_path, jpeg):
    from support.pipelines import OPERATORS
    pf = tmp_path / "boom.yaml"
    pf.write_text(f"pipeline: boom\noperator_modules: ['{OPERATORS}']\nstages:\n"
                  "  - {name: decode, operator: decode}\n  - {name: x, operator: explode}\n"
                  "  - {name: encoder, operator: encoder}\n")
    code, _, stderr = run(capsys, "run", str(jpeg), "-p", "boom", "--pipeline-file", str(pf),
                          "--backend", "local", "--debug")
    assert code == 1 and "Traceback" in stderr and "ZeroDivisionError" in stderr
    code, _, stderr = run(capsys, "pipelines", "--debug", "--pipeline-file",
                          str(tmp_path / "missing.yaml"))
    assert code == 1 and "no such pipeline file" in stderr and "Traceback" in stderr


def test_split_debug_stops_at_the_double_dash():
    from tilemore.cli import split_debug
    assert split_debug(["run", "a.jpg", "--debug"]) == (["run", "a.jpg"], True)
    assert split_debug(["--debug", "operators"]) == (["operators"], True)
    assert split_debug(["errors", "search", "--", "--debug"]) == (
        ["errors", "search", "--", "--debug"], False)


@pytest.mark.parametrize("argv, words", [
    (["-o", "out.gif"], "'.gif' is not a format tilemore writes"),
    (["-o", "out"], "no suffix is not a format"),
    (["-o", "out.png", "-f", "jpeg"], "is a png name but -f says jpeg"),
    (["-o", "out.jpg", "-f", "webp"], "is a jpeg name but -f says webp"),
    (["--contact-sheet", "s.gif"], "--contact-sheet"),
])
def test_output_suffix_must_name_the_format(capsys, tmp_path, jpeg, argv, words):
    argv = [str(tmp_path / a) if a.startswith(("out", "s.")) else a for a in argv]
    code, stdout, stderr = run(capsys, "run", str(jpeg), "-p", "thumbnail", *argv,
                               "--backend", "local")
    assert code == 1 and words in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not [p for p in tmp_path.iterdir() if p.name != jpeg.name]  # nothing written


@pytest.mark.parametrize("name, fmt, magic", [("o.JPG", "jpg", b"\xff\xd8"),
                                              ("o.jpeg", None, b"\xff\xd8"),
                                              ("o.webp", "webp", b"RIFF")])
def test_matching_suffix_and_format_are_written(capsys, tmp_path, jpeg, name, fmt, magic):
    out = tmp_path / name
    code, _, err = run(capsys, "run", str(jpeg), "-p", "thumbnail", "-o", str(out),
                       *(["-f", fmt] if fmt else []), "--backend", "local")
    assert code == 0, err
    assert out.read_bytes().startswith(magic)


@pytest.fixture
def sqlite_env(monkeypatch):
    for name in ("TILEMORE_DATABASE_URL", "TILEMORE_DATABASE", "TILEMORE_BLOB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TILEMORE_DATA_DIR", "state")  # relative, as people write it
    monkeypatch.setenv("COLUMNS", "200")


def test_database_commands_name_the_database_and_an_absolute_data_folder(
        capsys, tmp_path, monkeypatch, sqlite_env):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    code, out, err = run(capsys, "admin", "create-domain", "acme")
    here = tmp_path / "a" / "state"
    assert code == 0 and "created" in out
    assert err.strip() == (f"tilemore: database SQLite {here / 'tilemore.db'} (new: it does "
                           f"not exist yet); data folder {here}")
    code, out, err = run(capsys, "admin", "tokens", "acme", "--json")
    assert code == 0 and json.loads(out) == [] and "(new" not in err and str(here) in err
    # From another folder the same relative setting is another database, and it says so,
    # in the one error line.
    monkeypatch.chdir(tmp_path / "b")
    code, _, err = run(capsys, "admin", "tokens", "acme")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "no domain 'acme'" in err and str(tmp_path / "b" / "state" / "tilemore.db") in err
    code, _, err = run(capsys, "operators", "--json")  # no database: no line
    assert code == 0 and err == ""


def test_cli_settings_are_absolute(tmp_path, monkeypatch, sqlite_env):
    from tilemore.cli.state import cli_settings
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TILEMORE_BLOB_DIR", "blobs-here")
    s = cli_settings()
    assert s.data_dir == tmp_path / "state" and s.blob_path == tmp_path / "blobs-here"
    assert s.database_path == tmp_path / "state" / "tilemore.db"


def test_database_label_hides_the_password():
    from tilemore.cli.state import database_label
    from tilemore.settings import Settings
    s = Settings(database_url="postgresql://tm:s3cret@db.internal:5433/tilemore")
    assert database_label(s) == "PostgreSQL postgresql://tm@db.internal:5433/tilemore"


def test_credits_without_trailing_zeros():
    from decimal import Decimal

    from tilemore.cli.format import credit_cells, credits
    assert credits(Decimal("12.50000000000000000000")) == "12.5"
    assert credits("-0.25000000000000000000") == "-0.25"
    assert credits(Decimal("1000.00000000000000000000")) == "1000"
    assert credits(Decimal("0E-20")) == "0"
    assert credits("0.00000000000000000001") == "0.00000000000000000001"
    assert credits(None) == "" and credits("n/a") == "n/a"
    assert credit_cells({"date": "2026-11-29", "amount": "3.10000000000000000000", "n": 2}) == {
        "date": "2026-11-29", "amount": "3.1", "n": 2}


def all_commands() -> list[str]:
    import click

    from tilemore.cli import cli

    found: list[str] = []

    def walk(cmd: click.Command, path: str) -> None:
        found.append(path)
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}")

    walk(cli, "tilemore")
    return found[1:]


def test_docs_cli_names_every_command_and_completion():
    from pathlib import Path
    text = (Path(__file__).parents[2] / "docs" / "cli.md").read_text()
    commands = all_commands()
    assert "tilemore doctor" in commands and "tilemore operators describe" in commands
    missing = [c for c in commands if f"`{c}" not in text]
    assert not missing, missing
    assert "_TILEMORE_COMPLETE=bash_source tilemore" in text


def test_shell_completion_works():
    import os
    import subprocess
    import sys
    env = {**os.environ, "_TILEMORE_COMPLETE": "bash_source"}
    done = subprocess.run([sys.executable, "-m", "tilemore.cli"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "_tilemore_completion" in done.stdout, done.stderr
    env = {**os.environ, "_TILEMORE_COMPLETE": "bash_complete", "COMP_WORDS": "tilemore oper",
           "COMP_CWORD": "1"}
    done = subprocess.run([sys.executable, "-m", "tilemore.cli"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert "plain,operators" in done.stdout.splitlines()
