"""Parse and validate: every pipeline-file error names the file, the stage and the problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from support.pipelines import OPERATORS

from tilemore.errors import PipelineFileError
from tilemore.pipeline import load_pipeline
from tilemore.registry import OperatorRegistry


@pytest.fixture
def registry() -> OperatorRegistry:
    return OperatorRegistry.with_builtins()


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error(tmp_path, registry, text, name="p.yaml") -> PipelineFileError:
    path = write(tmp_path, text, name)
    with pytest.raises(PipelineFileError) as info:
        load_pipeline(path, registry)
    assert str(path) in str(info.value)
    return info.value


def test_builtin_pipeline_loads(denoised):
    assert denoised.stage_names == ["decode", "master", "shifter", "encoder"]
    master = denoised.stage("master")
    assert list(master.choices) == ["denoised-multiformat", "nlmeans", "bilateral", "guided",
                                    "dncnn", "deblock", "impulse"]
    assert master.default == "denoised-multiformat"
    assert denoised.output_stage == "encoder"


def test_unknown_operator(tmp_path, registry):
    err = error(tmp_path, registry, """
        pipeline: p
        stages:
          - {name: decode, operator: decode}
          - {name: sharpen, operator: sharpen-more}
          - {name: encoder, operator: encoder}
    """)
    assert err.stage == "sharpen" and "unknown operator 'sharpen-more'" in err.problem


def test_duplicate_stage(tmp_path, registry):
    err = error(tmp_path, registry, """
        pipeline: p
        stages:
          - {name: decode, operator: decode}
          - {name: shifter, operator: shifter}
          - {name: shifter, operator: shifter}
          - {name: encoder, operator: encoder}
    """)
    assert err.stage == "shifter" and "duplicate stage" in err.problem


def test_bad_parameter_type(tmp_path, registry):
    err = error(tmp_path, registry, """
        pipeline: p
        stages:
          - {name: decode, operator: decode}
          - {name: encoder, operator: encoder, params: {quality: "very high"}}
    """)
    assert err.stage == "encoder" and "quality" in err.problem


def test_unknown_parameter_in_file(tmp_path, registry):
    err = error(tmp_path, registry, """
        pipeline: p
        stages:
          - {name: decode, operator: decode}
          - {name: encoder, operator: encoder, params: {qualty: 90}}
    """)
    assert "no parameter 'qualty'" in err.problem


def test_cycle(tmp_path, registry):
    err = error(tmp_path, registry, """
        pipeline: p
        stages:
          - {name: decode, operator: decode}
          - {name: a, operator: shifter, inputs: [b]}
          - {name: b, operator: shifter, inputs: [a]}
          - {name: encoder, operator: encoder, inputs: [b]}
    """)
    assert "cycle" in err.problem and err.stage in ("a", "b")
    assert "a -> b -> a" in err.problem or "b -> a -> b" in err.problem


def test_unknown_input_stage(tmp_path, registry):
    err = error(tmp_path, registry, """
        pipeline: p
        stages:
          - {name: decode, operator: decode}
          - {name: encoder, operator: encoder, inputs: [shifter]}
    """)
    assert err.stage == "encoder" and "input 'shifter'" in err.problem


def test_unknown_algorithm_choice(tmp_path, registry):
    err = error(tmp_path, registry, """
        pipeline: p
        stages:
          - {name: decode, operator: decode}
          - {name: master, choices: [magic]}
          - {name: encoder, operator: encoder}
    """)
    assert err.stage == "master" and "unknown algorithm or operator 'magic'" in err.problem


def test_roles_are_checked(tmp_path, registry):
    err = error(tmp_path, registry, """
        pipeline: p
        algorithms:
          a:
            branches: {x: {operator: nlmeans}, y: {operator: encoder}}
            select: {operator: qc-residual}
        stages:
          - {name: decode, operator: decode}
          - {name: master, choices: [a]}
          - {name: encoder, operator: encoder}
    """)
    assert err.stage == "algorithm a" and "'encoder' is a sink" in err.problem
    err = error(tmp_path, registry, """
        pipeline: p
        stages:
          - {name: decode, operator: decode}
          - {name: shifter, operator: shifter}
    """)
    assert "output stage must run a sink" in err.problem


def test_structure_errors_name_the_stage(tmp_path, registry):
    err = error(tmp_path, registry, """
        pipeline: p
        stages:
          - {name: decode, operator: decode}
          - {name: shifter, operator: shifter, choices: [nlmeans]}
    """)
    assert err.stage == "shifter" and "either `operator` or `choices`" in err.problem
    err = error(tmp_path, registry, """
        pipeline: p
        stages:
          - {name: decode, operator: decode, colour: red}
    """)
    assert err.stage == "decode" and "colour" in err.problem


def test_syntax_errors(tmp_path, registry):
    err = error(tmp_path, registry, "pipeline: p\nstages: [\n")
    assert "not valid YAML" in err.problem
    err = error(tmp_path, registry, "pipeline = \n", name="p.toml")
    assert "not valid TOML" in err.problem
    err = error(tmp_path, registry, "- just\n- a list\n")
    assert "mapping" in err.problem
    with pytest.raises(PipelineFileError, match="no such|cannot read"):
        load_pipeline(tmp_path / "missing.yaml", registry)


def test_toml_pipeline_with_customer_operator_module(tmp_path, registry):
    path = write(tmp_path, f"""
        pipeline = "inverted"
        operator_modules = ["{OPERATORS}"]

        [[stages]]
        name = "decode"
        operator = "decode"

        [[stages]]
        name = "invert"
        operator = "invert"

        [[stages]]
        name = "encoder"
        operator = "encoder"
        params = {{ format = "png" }}
    """, name="inverted.toml")
    pipeline = load_pipeline(path, registry)
    assert pipeline.stage("invert").step.operator.name == "invert"
    assert "spin" in registry  # every operator the module defines is registered


def test_missing_operator_module(tmp_path, registry):
    err = error(tmp_path, registry, """
        pipeline: p
        operator_modules: [./nowhere.py]
        stages:
          - {name: decode, operator: decode}
          - {name: encoder, operator: encoder}
    """)
    assert "cannot load operator module './nowhere.py'" in err.problem


def test_fingerprint_follows_content(tmp_path, registry):
    text = """
        pipeline: p
        stages:
          - {name: decode, operator: decode}
          - {name: encoder, operator: encoder, params: {quality: %d}}
    """
    a = load_pipeline(write(tmp_path, text % 80, "a.yaml"), registry)
    b = load_pipeline(write(tmp_path, text % 80, "b.yaml"), registry)
    c = load_pipeline(write(tmp_path, text % 90, "c.yaml"), registry)
    assert a.fingerprint == b.fingerprint != c.fingerprint
