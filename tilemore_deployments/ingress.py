"""The HTTP ingress as a Ray Serve deployment: validate, record, hand off to a conductor of
its deploy's generation (a redeploy starts new ones, which retire the old), chosen per
thread (:mod:`tilemore.service.handoffs`)."""

from __future__ import annotations

from typing import Any

from ray import serve

from tilemore.api.app import create_app, use_service
from tilemore.assembly import open_parts
from tilemore.service.generations import new_generation
from tilemore.settings import Autoscaling, Settings
from tilemore_deployments.billing import get_billing
from tilemore_deployments.conductor import hand_offs, submit

app = create_app()
SERVE_METRICS_INTERVAL_S = 10.0  # Serve's default push of request counts to its controller


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256)
@serve.ingress(app)
class Ingress:
    def __init__(self, settings: Settings, generation: str = "") -> None:
        conductors = hand_offs(settings, generation)
        parts = open_parts(settings, billing=get_billing(settings, generation))
        use_service(parts.api(handoff=lambda tid: conductors.hand_off(tid, submit)))


def build_app(settings: Settings, generation: str | None = None) -> serve.Application:
    """The application of one deploy: its replicas share the conductors of ``generation``
    (by default a new one: this deploy's)."""
    generation = generation or new_generation()
    auto = settings.ingress_autoscaling
    if auto is None:
        return Ingress.options(num_replicas=settings.ingress_replicas).bind(settings, generation)
    return Ingress.options(autoscaling_config=serve_autoscaling(auto)).bind(settings,
                                                                             generation)


def serve_autoscaling(auto: Autoscaling) -> dict[str, Any]:
    """Serve's ``autoscaling_config``: the same names. Serve counts requests every 10 s by
    default; a shorter look-back needs them counted within it (Serve wants it longer)."""
    config: dict[str, Any] = auto.model_dump()
    if auto.look_back_period_s <= SERVE_METRICS_INTERVAL_S:
        config["metrics_interval_s"] = auto.look_back_period_s / 2
    return config


def build(args: dict[str, Any]) -> serve.Application:
    """The builder ``serve.yaml`` names: settings from the cluster's TILEMORE_* variables."""
    return build_app(Settings.from_env())
