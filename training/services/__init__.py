"""Services of the model side; views, admin, commands and tasks call these and nothing else.

Import each from its module (``from training.services.runs import training_run_request``). The
modules a web process or a data command imports (params, runs, versions, triggers, gate, ...)
must not import PyTorch at module level: the training and scoring code loads torch when first
used (tests/test_light_imports.py holds this).
"""
