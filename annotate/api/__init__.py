"""The REST API under /api/v1/: thin views over the annotate services and selectors.

Every view states, per action, the one permission it needs (``policy``); the OpenAPI schema and
the docs page read the same table, so what the docs say is what the code checks.
"""
