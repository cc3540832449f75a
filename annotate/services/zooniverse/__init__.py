"""Zooniverse sync: subjects pushed, classifications pulled, workflow versions read, retirement.

One module per job: ``push`` (a round's items as a subject set, images uploaded), ``pull``
(classifications by keyset page, or by export), ``workflows`` (the answer maps of workflow
versions), ``retirement``; ``operation`` gives each service its client and wall budget. Every
service is safe to run again after a crash or a redelivered Celery message (``reliability.md``
§1-§2); the HTTP side lives in :mod:`annotate.zooniverse.client`.
"""
