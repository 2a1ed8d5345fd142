"""Authoring tools: validate, schema, init, operators describe, the load-time checks of an
operator module, and tilemore.testing.run_operator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml
from support.cli import run

from tilemore.catalog import builtin_pipeline_dir
from tilemore.cli import main
from tilemore.cli.authoring import pipeline_schema
from tilemore.errors import PipelineFileError, UnknownOperator
from tilemore.image import Encoded, Image
from tilemore.operator import Operator, Selection
from tilemore.pipeline import load_pipeline
from tilemore.pipeline.validate import pipeline_problems
from tilemore.registry import OperatorDefinitionError, OperatorRegistry, runtime_env_for
from tilemore.testing import run_operator

TESTS = Path(__file__).parents[1]
REPO = TESTS.parent

BAD = """\
pipeline: bad
algorithms:
  duo:
    branches:
      a: {operator: nlmeans, params: {strength: lots}}
      b: {operator: encoder}
    select: {operator: qc-residual}
stages:
  - {name: decode, operator: decode}
  - {name: master, choices: [duo, nope]}
  - {name: shifter, operator: shifter, params: {zoom: 2}, inputs: [ghost]}
  - {name: master, operator: nlmeans}
  - {name: encoder, operator: encoder, params: {quality: 500}}
"""


def shipped_and_test_pipelines() -> list[Path]:
    files = [*builtin_pipeline_dir().iterdir(), *(TESTS / "data").iterdir()]
    return sorted(p for p in files if p.suffix in (".yaml", ".yml", ".toml"))


# -- validate --------------------------------------------------------------------------------


def test_validate_reports_every_problem_of_every_file(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    shape = tmp_path / "shape.yaml"
    shape.write_text("pipeline: Bad Name\nstages:\n  - {name: decode, operator: decode, "
                     "colour: red}\n  - {name: x}\n")
    good = builtin_pipeline_dir() / "thumbnail.yaml"
    code, out, err = run(capsys, "validate", str(bad), str(shape), str(good))
    assert code == 1
    lines = out.splitlines()
    expected = [
        (bad, "algorithm duo", "branches.a.params.strength", "valid number"),
        (bad, "algorithm duo", "branches.b.operator", "is a sink"),
        (bad, "master", "choices", "unknown algorithm or operator 'nope'"),
        (bad, "shifter", "params.zoom", "no parameter 'zoom'"),
        (bad, "master", "name", "duplicate stage name"),
        (bad, "encoder", "params.quality", "less than or equal to 100"),
        (bad, "shifter", "inputs.0", "input 'ghost' is not a stage"),
        (shape, None, "pipeline", "should match pattern"),
        (shape, "decode", "colour", "Extra inputs"),
        (shape, "x", None, "either `operator` or `choices`"),
    ]
    for path, stage, field, words in expected:
        want = str(path) + (f": stage '{stage}'" if stage else "") + (
            f": field '{field}'" if field else "")
        assert any(line.startswith(want) and words in line for line in lines), (want, out)
    assert f"{good}: ok" in lines
    assert len(lines) == len(expected) + 1
    assert "10 problems in 2 of 3 files" in err


def test_validate_json_and_success(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    code, out, _ = run(capsys, "validate", "--json", str(bad))
    body = json.loads(out)
    assert code == 1 and body["ok"] is False and body["problems"] == 7
    first = body["files"][0]["problems"][0]
    assert first == {"file": str(bad), "stage": "algorithm duo",
                     "field": "branches.a.params.strength", "message": first["message"]}
    files = [str(p) for p in shipped_and_test_pipelines()]
    code, out, err = run(capsys, "validate", *files)
    assert code == 0, out + err
    assert out.count(": ok") == len(files)
    code, out, _ = run(capsys, "validate", str(TESTS / "data"))  # a folder: its files
    assert code == 0 and out.count(": ok") == len(list((TESTS / "data").glob("*.yaml")))
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "validate", str(tmp_path / "empty"))
    assert code == 1 and "no pipeline files" in err


def test_the_first_problem_is_what_load_pipeline_raises(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    problems = pipeline_problems(bad, OperatorRegistry.with_builtins())
    with pytest.raises(PipelineFileError) as info:
        load_pipeline(bad, OperatorRegistry.with_builtins())
    assert str(info.value) == str(problems[0])
    assert pipeline_problems(builtin_pipeline_dir() / "thumbnail.yaml",
                             OperatorRegistry.with_builtins()) == []


# -- schema ----------------------------------------------------------------------------------


def schema_validator(capsys) -> jsonschema.Draft202012Validator:
    code, out, _ = run(capsys, "schema", "pipeline")
    assert code == 0
    schema = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def load(path: Path):
    if path.suffix == ".toml":
        import tomllib
        return tomllib.loads(path.read_text())
    return yaml.safe_load(path.read_text())


def test_schema_accepts_every_shipped_and_test_pipeline(capsys, tmp_path):
    validator = schema_validator(capsys)
    files = shipped_and_test_pipelines()
    assert len(files) >= 4
    for path in files:
        errors = list(validator.iter_errors(load(path)))
        assert not errors, (path, [e.message for e in errors])
    # the operator modules' own pipeline, as `init operator` writes it
    assert main(["init", "operator", "glow", "--dir", str(tmp_path)]) == 0
    assert not list(validator.iter_errors(load(tmp_path / "glow.yaml")))


@pytest.mark.parametrize("doc, words", [
    ({"pipeline": "p", "stages": [{"name": "a", "operator": "decode", "colour": 1}]},
     "colour"),
    ({"pipeline": "p", "stages": [{"name": "a", "operator": "x", "choices": ["y"]}]},
     "not valid under any"),
    ({"pipeline": "p", "stages": [{"name": "a"}]}, "not valid under any"),
    ({"pipeline": "P q", "stages": [{"name": "a", "operator": "x"}]}, "does not match"),
    ({"pipeline": "p", "stages": []}, "should be non-empty"),
    ({"pipeline": "p", "stagez": []}, "stages"),
])
def test_schema_refuses_what_the_parser_refuses(capsys, doc, words):
    errors = [e.message for e in schema_validator(capsys).iter_errors(doc)]
    assert any(words in e for e in errors), errors


def test_schema_offers_the_builtin_operator_names():
    schema = pipeline_schema(["decode", "encoder"])
    assert schema["$defs"]["StageDoc"]["properties"]["operator"]["examples"] == [
        "decode", "encoder"]


# -- init operator ---------------------------------------------------------------------------


def test_init_operator_writes_an_operator_a_pipeline_and_a_passing_test(capsys, tmp_path):
    code, out, _ = run(capsys, "init", "operator", "soft-glow", "--dir", str(tmp_path))
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "soft-glow.yaml", "soft_glow.py", "test_soft_glow.py"]
    code, out, _ = run(capsys, "validate", str(tmp_path / "soft-glow.yaml"))
    assert code == 0 and ": ok" in out
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(tmp_path), "test_soft_glow.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
    # again: refused without --force, so an author's work is never overwritten
    code, _, err = run(capsys, "init", "operator", "soft-glow", "--dir", str(tmp_path))
    assert code == 1 and "exist" in err and "--force" in err


@pytest.mark.parametrize("name, words", [
    ("Bad_Name", "lowercase"), ("9lives", "lowercase"), ("encoder", "built-in")])
def test_init_operator_refuses_bad_names(capsys, tmp_path, name, words):
    code, _, err = run(capsys, "init", "operator", name, "--dir", str(tmp_path))
    assert code == 1 and words in err and not list(tmp_path.iterdir())


# -- operators describe, listings as JSON ----------------------------------------------------


def test_describe_shows_types_defaults_ranges_and_descriptions(capsys):
    code, out, _ = run(capsys, "operators", "describe", "encoder")
    assert code == 0
    row = next(line for line in out.splitlines() if "quality" in line and "int" in line)
    assert "85" in row and "≥ 1" in row and "≤ 100" in row and "JPEG" in row
    for words in ("a sink", "def process(self, params, image)", "price", "halo", "CPU"):
        assert words in out
    code, out, _ = run(capsys, "operators", "describe", "encoder", "--json")
    info = json.loads(out)
    quality = next(p for p in info["parameters"] if p["name"] == "quality")
    assert quality == {"name": "quality", "type": "int", "required": False, "default": 85,
                       "range": {"ge": 1, "le": 100}, "description": "JPEG and lossy WebP"}
    assert info["role"] == "sink" and info["price"]["per_call"].startswith("0.0001")
    fmt = next(p for p in info["parameters"] if p["name"] == "format")
    assert fmt["type"] == "'jpeg' | 'png' | 'webp'"
    code, out, _ = run(capsys, "operators", "describe", "shifter", "--json")
    names = [p["name"] for p in json.loads(out)["parameters"]]
    assert "resize.width" in names and "crop.gravity" in names  # nested models too


def test_describe_unknown_operator_and_an_authors_operator(capsys):
    code, _, err = run(capsys, "operators", "describe", "sharpen-more")
    assert code == 1 and "unknown operator 'sharpen-more'" in err
    code, out, _ = run(capsys, "operators", "describe", "spin", "--pipeline-file",
                       str(TESTS / "data" / "chaos.yaml"))
    assert code == 0 and "spin" in out


def test_listings_as_json(capsys):
    code, out, _ = run(capsys, "operators", "--json")
    ops = {o["name"]: o for o in json.loads(out)}
    assert code == 0 and ops["encoder"]["role"] == "sink" and "nlmeans" in ops
    code, out, _ = run(capsys, "pipelines", "--json")
    pipes = {p["name"]: p for p in json.loads(out)}
    assert [s["name"] for s in pipes["thumbnail"]["stages"]] == ["decode", "shifter",
                                                                  "encoder"]
    assert pipes["thumbnail"]["stages"][1]["operator"] == "shifter"


# -- the operator module's load-time checks --------------------------------------------------


def write_module(tmp_path: Path, body: str, name: str = "ops.py") -> Path:
    path = tmp_path / name
    path.write_text("from tilemore.operator import Operator\n" + textwrap.dedent(body))
    return path


@pytest.mark.parametrize("role, signature", [
    ("transform", "(self, params)"),
    ("transform", "(self, params, image, mask)"),
    ("sink", "(self, image)"),
    ("source", "(self, params, data, *, scale)"),
    ("selector", "(self, params, original, best)"),
])
def test_a_wrong_process_signature_fails_at_load(tmp_path, role, signature):
    path = write_module(tmp_path, f"""
        class Wrong(Operator):
            name = "wrong"
            role = "{role}"

            def process{signature}:
                return None
    """, name=f"wrong_{role}_{len(signature)}.py")
    with pytest.raises(OperatorDefinitionError) as info:
        OperatorRegistry().load(str(path))
    message = str(info.value)
    assert "operator 'wrong'" in message and path.stem in message  # names module, operator
    assert f"a {role}'s is" in message and "def process(self, params" in message


def test_a_missing_process_or_role_fails_at_load(tmp_path):
    path = write_module(tmp_path, """
        class Lazy(Operator):
            name = "lazy"
    """)
    with pytest.raises(OperatorDefinitionError, match="'lazy'.*defines no process"):
        OperatorRegistry().load(str(path))
    path = write_module(tmp_path, """
        class Odd(Operator):
            name = "odd"
            role = "filter"

            def process(self, params, image):
                return image
    """, name="odd.py")
    with pytest.raises(OperatorDefinitionError, match="role 'filter' is not one of"):
        OperatorRegistry().load(str(path))


def test_validate_reports_a_wrong_signature_in_an_operator_module(capsys, tmp_path):
    write_module(tmp_path, """
        class Wrong(Operator):
            name = "wrong"

            def process(self, image):
                return image
    """)
    pipe = tmp_path / "p.yaml"
    pipe.write_text("pipeline: p\noperator_modules: [./ops.py]\nstages:\n"
                    "  - {name: decode, operator: decode}\n"
                    "  - {name: encoder, operator: encoder}\n")
    code, out, _ = run(capsys, "validate", str(pipe))
    assert code == 1 and "field 'operator_modules.0'" in out and "operator 'wrong'" in out
    (tmp_path / "ops.py").write_text("raise RuntimeError('no licence file')\n")
    code, out, _ = run(capsys, "validate", str(pipe))
    assert code == 1 and "importing it raised RuntimeError: no licence file" in out


def test_requirements_become_the_replicas_runtime_env(tmp_path):
    path = write_module(tmp_path, """
        REQUIREMENTS = ["scikit-image>=0.22", "tifffile==2024.1.30"]

        class Needy(Operator):
            name = "needy"

            def process(self, params, image):
                return image
    """)
    registry = OperatorRegistry()
    (needy,) = registry.load(str(path))
    assert runtime_env_for(needy) == {"pip": ["scikit-image>=0.22", "tifffile==2024.1.30"]}
    assert runtime_env_for(OperatorRegistry.with_builtins().get("encoder")) is None
    bad = write_module(tmp_path, """
        REQUIREMENTS = ["scikit-image >>= 0.22"]
    """, name="bad_reqs.py")
    with pytest.raises(OperatorDefinitionError, match="REQUIREMENTS"):
        OperatorRegistry().load(str(bad))
    worse = write_module(tmp_path, "REQUIREMENTS = 'numpy'\n", name="worse_reqs.py")
    with pytest.raises(OperatorDefinitionError, match="list of pip requirement strings"):
        OperatorRegistry().load(str(worse))


# -- tilemore.testing.run_operator -----------------------------------------------------------


def test_run_operator_for_every_role():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    smooth = run_operator("nlmeans", pixels, {"strength": 0.5})
    assert isinstance(smooth, Image) and smooth.pixels.shape == pixels.shape
    encoded = run_operator("encoder", smooth, {"format": "png"})
    assert isinstance(encoded, Encoded) and encoded.content_type == "image/png"
    decoded = run_operator("decode", encoded.data)
    assert np.array_equal(decoded.pixels, smooth.pixels)  # PNG is lossless
    verdict = run_operator("qc-residual", pixels, candidates=[smooth, pixels])
    assert isinstance(verdict, Selection) and len(verdict.scores) == 2
    grey = run_operator("nlmeans", pixels[:, :, 0])  # a 2-D array is grey
    assert grey.pixels.shape == (40, 48, 3)


def test_run_operator_gives_the_context_and_checks_params():
    class Peek(Operator):
        name = "peek"

        def process(self, params, image):
            return image.with_rgb(np.full_like(image.rgb(), self.context.options["level"]))

    out = run_operator(Peek, np.zeros((4, 4, 3), np.uint8), options={"level": 7},
                       tile_memory_bytes=2**20)
    assert (out.pixels == 7).all()
    with pytest.raises(TypeError, match="unknown context field"):
        run_operator(Peek, np.zeros((4, 4, 3), np.uint8), settings={})
    with pytest.raises(Exception, match="quality"):
        run_operator("encoder", np.zeros((4, 4, 3), np.uint8), {"quality": 0})
    with pytest.raises(TypeError, match="source: give it the file's bytes"):
        run_operator("decode", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(TypeError, match="candidates"):
        run_operator("qc-residual", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(UnknownOperator):
        run_operator("sharpen-more", np.zeros((4, 4, 3), np.uint8))
