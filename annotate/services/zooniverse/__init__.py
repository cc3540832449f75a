"""Data between Zooniverse and crowdloop: subjects out, classifications and subjects in.

Over the API: ``push`` (a round's items as a subject set, images uploaded), ``pull``
(classifications by keyset page, or by export), ``workflows`` (which concept each answer of each
workflow version stands for), ``retirement``; ``operation`` gives each its client and wall budget.
From export files: ``export_download``, ``classification_import``, ``subject_import``. Every
service is safe to run again after a crash or a redelivered Celery message (``reliability.md``
§1-§2); the ingest they feed is :mod:`annotate.services.classifications`.
"""
