"""Tilemore's Ray Serve applications, installed as the ``tilemore_deployments`` package.

``ingress`` is the HTTP application (``serve.yaml`` deploys it); ``conductor`` is the named
actor that runs task threads. Everything Ray-specific about the service lives here.
"""
