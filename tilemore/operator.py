"""The operator contract: what a unit of work declares and how it is called.

An operator is one class. It declares a ``name`` and ``version``, the ``resources`` one replica
holds, a ``halo`` (receptive-field radius, for tiling), a ``Params`` model (a pydantic
:class:`OperatorParams`, which refuses unknown fields), and a ``price``. ``setup`` runs once
per replica (load models there); ``process`` runs once per task.

The ``role`` says where an operator may stand in a pipeline:

- ``source``: bytes in, :class:`~tilemore.image.Image` out (decoders);
- ``transform``: image in, image out (denoisers, the shifter);
- ``selector``: the stage input and every candidate in, a :class:`Selection` out (QC);
- ``sink``: image in, :class:`~tilemore.image.Encoded` out (encoders).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tilemore.retry import RetryPolicy
from tilemore.settings import Autoscaling, Settings

Role = Literal["source", "transform", "selector", "sink"]

CREDIT_QUANTUM = Decimal("1e-20")  # prices and credits carry 20 fractional digits
_WIDE = Context(prec=60)  # exact for NUMERIC(38, 20); the default context rounds at 28 digits


class OperatorParams(BaseModel):
    """Base for every operator's parameter model: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(OperatorParams):
    pass


class Resources(BaseModel):
    """What one replica of the operator holds while it lives."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory_per_megapixel: int = Field(
        32 * 2**20, ge=0, description="peak working memory per input megapixel, in bytes"
    )
    gpu_optional: bool = Field(
        False, description="runs on CPU where the cluster has no GPU (num_gpus then 0)"
    )
    cpu_fallback_cpus: float | None = Field(
        None, ge=0, description="the CPUs a replica holds when it runs on CPU for want of a "
        "GPU (gpu_optional): work a GPU would do then needs more cores; default num_cpus"
    )
    custom: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources a replica holds, e.g. a node "
        "kind such as {'a100': 1} declared by the cluster config's worker types"
    )

    def cpus_without_gpu(self) -> float:
        """The CPUs a replica holds where it gets no GPU: its CPU fallback's, if declared."""
        if self.gpu_optional and self.num_gpus and self.cpu_fallback_cpus is not None:
            return self.cpu_fallback_cpus
        return self.num_cpus


class Price(BaseModel):
    """What one task costs: a fixed part per call plus a part per input megapixel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_call: Decimal = Decimal(0)
    per_megapixel: Decimal = Decimal(0)

    @field_validator("per_call", "per_megapixel")
    @classmethod
    def _quantize(cls, value: Decimal) -> Decimal:
        if value < 0:
            raise ValueError("a price cannot be negative")
        if value != value.quantize(CREDIT_QUANTUM, context=_WIDE):
            raise ValueError("a price has at most 20 fractional digits")
        return value.quantize(CREDIT_QUANTUM, context=_WIDE)

    def cost(self, megapixels: float) -> Decimal:
        mp = Decimal(repr(megapixels))
        exact = _WIDE.add(self.per_call, _WIDE.multiply(self.per_megapixel, mp))
        return exact.quantize(CREDIT_QUANTUM, context=_WIDE)


@dataclass(frozen=True)
class OperatorContext:
    """What an operator knows of the service it runs in: the device its replica holds, the
    memory a tile may use, the input pixel limit, and its own settings. Never the service's
    settings: those hold database URLs and secrets, and operators are customer code."""

    device: Literal["cpu", "cuda"] = "cpu"
    tile_memory_bytes: int = 128 * 2**20
    max_input_pixels: int = 250_000_000
    options: Mapping[str, Any] = field(default_factory=dict)
    """This operator's own settings: ``TILEMORE_OPERATOR_SETTINGS`` under its name."""
    cpus: float | None = None
    """The CPUs this replica holds (on Ray, what its actor was given): size thread pools to
    it. ``None`` where it has no share of its own (the in-process backend shares one
    process between operators)."""

    @classmethod
    def for_operator(cls, operator: type[Operator], settings: Settings,
                     cpus: float | None = None) -> OperatorContext:
        return cls(device=_device(operator), tile_memory_bytes=settings.tile_memory_bytes,
                   max_input_pixels=settings.max_input_pixels,
                   options=MappingProxyType(settings.operator_options(operator.name)),
                   cpus=cpus)


def _device(operator: type[Operator]) -> Literal["cpu", "cuda"]:
    if operator.resources.num_gpus <= 0:
        return "cpu"
    import torch  # only replicas that asked for a GPU pay for the import

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True, slots=True)
class Selection:
    """A selector's verdict: the index of the picked candidate and every candidate's score
    (higher is better), in the order the candidates were given. ``details`` holds each
    candidate's score components, for the run's record."""

    pick: int
    scores: list[float]
    details: list[dict[str, float]] = field(default_factory=list)


class Operator:
    """Subclass this to add an operator; see the README for a complete example."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    role: ClassVar[Role] = "transform"
    description: ClassVar[str] = ""
    resources: ClassVar[Resources] = Resources()
    halo: ClassVar[int] = 0
    Params: ClassVar[type[OperatorParams]] = NoParams
    price: ClassVar[Price] = Price()
    tiling: ClassVar[Literal["exact", "blend"] | None] = None
    """How the backend may split a task across replicas: ``exact`` for operators exactly
    local within their halo (stitched), ``blend`` for the others (feathered), ``None`` for
    operators that need the whole image."""
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    """When a failed task runs again (a pipeline file may override it per stage)."""
    autoscaling: ClassVar[Autoscaling | None] = None
    """Grow and shrink the operator's replica pool with its load (on Ray), as Serve does a
    deployment's; ``None``: a fixed pool of ``settings.replicas``. The
    ``operator_autoscaling`` setting overrides it."""

    def __init__(self) -> None:
        self.context = OperatorContext()  # the host gives each replica its own

    def setup(self) -> None:
        """Load models and other expensive state; runs once per replica, after ``context``
        is set. Raise here, not in ``process``, when the operator cannot work at all."""

    def process(self, params: Any, *inputs: Any) -> Any:
        raise NotImplementedError

    def plan(self, params: Any, original: Any, branches: list[str]) -> dict[str, Any] | None:
        """A selector may look at its stage's input before the branches run and name those
        worth running: ``{"run": [names], "reasons": {name: why}, "measures": {...}}``. The
        others are skipped: never run, never charged, and ``process`` gets only the rest (a
        ``candidates`` parameter, if its Params has one, names them). ``None``: run all."""
        return None

    def tile_side(self) -> int:
        """The side of the square tiles this replica can take at once: from the memory it
        may use (the ``tile_memory_bytes`` setting) and its declared memory per megapixel."""
        from tilemore.tiling import tile_side

        return tile_side(self.context.tile_memory_bytes, self.resources.memory_per_megapixel,
                         self.halo)

    @classmethod
    def input_size_hint(cls, params: Any) -> tuple[int, int] | None:
        """The smallest (width, height) of input this stage needs, if it is smaller than the
        image. A decoder may then decode at reduced scale (JPEG DCT scaling). ``None`` means the
        stage needs every pixel."""
        return None

    @classmethod
    def output_size(cls, params: Any, size: tuple[int, int]) -> tuple[int, int]:
        """The (width, height) this operator makes from an input of ``size``, without running
        it (to price work before it runs). Most operators keep the size."""
        return size

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "version": cls.version,
            "role": cls.role,
            "description": cls.description,
            "resources": cls.resources.model_dump(),
            "halo": cls.halo,
            "price": {k: str(v) for k, v in cls.price.model_dump().items()},
            "retry": cls.retry.model_dump(),
            "parameters": sorted(cls.Params.model_fields),
        }
