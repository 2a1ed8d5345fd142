"""The operator contract, the registry and the settings."""

from __future__ import annotations

import pickle
from decimal import Decimal

import pytest
from pydantic import ValidationError

from tilemore import Operator, OperatorParams, Price, Settings
from tilemore.errors import ImageTooLarge, TilemoreError, UnknownOperator
from tilemore.registry import OperatorRegistry


def test_params_refuse_unknown_fields():
    class P(OperatorParams):
        level: int = 1

    with pytest.raises(ValidationError, match="extra"):
        P(levle=2)


def test_price_is_decimal_with_twenty_digits():
    price = Price(per_call=Decimal("0.0001"), per_megapixel=Decimal("0.00000000000000000001"))
    assert price.cost(12.0) == Decimal("0.00010000000000000012")
    with pytest.raises(ValidationError, match="20 fractional digits"):
        Price(per_call=Decimal("0.000000000000000000001"))
    with pytest.raises(ValidationError, match="negative"):
        Price(per_call=Decimal("-1"))


def test_registry_builtins_and_lookup():
    reg = OperatorRegistry.with_builtins()
    assert {"decode", "nlmeans", "bilateral", "guided", "qc-residual", "shifter",
            "encoder"} <= {op.name for op in reg}
    with pytest.raises(UnknownOperator, match="unknown operator 'nope'"):
        reg.get("nope")


def test_registry_refuses_two_operators_with_one_name():
    class A(Operator):
        name = "same"

        def process(self, params, image):
            return image

    class B(A):
        name = "same"

    reg = OperatorRegistry([A])
    reg.add(A)  # the same class again is fine
    with pytest.raises(ValueError, match="defined twice"):
        reg.add(B)


def test_registry_loads_a_customer_file(tmp_path):
    (tmp_path / "sharpen.py").write_text(
        "from tilemore import Operator\n"
        "class Sharpen(Operator):\n"
        "    name = 'sharpen'\n"
        "    def process(self, params, image):\n"
        "        return image\n"
        "class _Base(Operator):\n"  # no name: an abstract helper, not registered
        "    pass\n"
    )
    reg = OperatorRegistry()
    found = reg.load("sharpen.py", relative_to=tmp_path)
    assert [op.name for op in found] == ["sharpen"] and "sharpen" in reg


def test_errors_keep_their_code_through_pickling():
    err = ImageTooLarge("too big")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is ImageTooLarge and again.code == "image_too_large"
    assert again.message == "too big" and again.status == 413
    custom = TilemoreError("x", code="custom_code")
    assert pickle.loads(pickle.dumps(custom)).code == "custom_code"


def test_settings_from_environment(tmp_path):
    s = Settings.from_env({"TILEMORE_MAX_INPUT_PIXELS": "1000", "TILEMORE_REPLICAS": "2",
                           "TILEMORE_PIPELINE_PATHS": f"{tmp_path}"})
    assert s.max_input_pixels == 1000 and s.replicas == 2 and s.pipeline_paths == [tmp_path]
    with pytest.raises(TilemoreError, match="TILEMORE_REPLICAS"):
        Settings.from_env({"TILEMORE_REPLICAS": "zero"})


def test_an_operator_gets_a_small_context_never_the_settings():
    from tilemore.engine.host import OperatorHost
    from tilemore.operator import OperatorContext
    from tilemore.settings import Settings

    class Curious(Operator):
        name = "curious"

        def process(self, params, image):
            return image

    settings = Settings.from_env({
        "TILEMORE_DATABASE_URL": "postgresql://tilemore:s3cret@db:5432/tilemore",
        "TILEMORE_TILE_MEMORY_BYTES": str(2**22),
        "TILEMORE_OPERATOR_SETTINGS": '{"curious": {"level": 3}, "other": {"key": "x"}}'})
    op = OperatorHost(Curious, settings).operator
    assert op.context == OperatorContext(device="cpu", tile_memory_bytes=2**22,
                                         max_input_pixels=settings.max_input_pixels,
                                         options={"level": 3})
    assert not hasattr(op, "settings")
    assert "s3cret" not in repr(vars(op))  # nothing of the database URL reaches it
    with pytest.raises(TypeError):
        op.context.options["level"] = 4  # read-only
