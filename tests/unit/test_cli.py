"""The CLI in-process (``--backend local``, no Ray): results, tables, and one-line errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from images import encode, noisy, photo, png_bomb
from PIL import Image as PILImage

from tilemore.cli import main


@pytest.fixture
def jpeg(tmp_path):
    path = tmp_path / "in.jpg"
    path.write_bytes(encode(noisy(photo(320, 240), 15), "JPEG", quality=92))
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


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
    from pipelines import TEST_OPS
    pf = tmp_path / "boom.yaml"
    pf.write_text(f"pipeline: boom\noperator_modules: ['{TEST_OPS}']\nstages:\n"
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
