"""The HTTP ingress as a Ray Serve deployment: validate, record, hand off to the conductor."""

from __future__ import annotations

from typing import Any

from ray import serve
from tilemore_deployments.billing import get_billing
from tilemore_deployments.conductor import get_conductor

from tilemore.api.app import create_app, use_service
from tilemore.api.service import ApiService
from tilemore.blobs import open_blob_store
from tilemore.catalog import Catalog
from tilemore.settings import Settings
from tilemore.store import open_store
from tilemore.store.errors import open_error_index

app = create_app()


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256)
@serve.ingress(app)
class Ingress:
    def __init__(self, settings: Settings) -> None:
        store = open_store(settings)
        conductor = get_conductor(settings)
        use_service(ApiService(store, store, open_blob_store(settings), Catalog.load(settings),
                               settings, handoff=lambda tid: conductor.submit.remote(tid),
                               billing=get_billing(settings),
                               errors=open_error_index(settings)))


def build_app(settings: Settings) -> serve.Application:
    return Ingress.options(num_replicas=settings.ingress_replicas).bind(settings)


def build(args: dict[str, Any]) -> serve.Application:
    """The builder ``serve.yaml`` names: settings from the cluster's TILEMORE_* variables."""
    return build_app(Settings.from_env())
