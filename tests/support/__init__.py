"""Helpers the test tiers share: services, images, databases, operators and waits."""
