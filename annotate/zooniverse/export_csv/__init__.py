"""Parsers of the export CSVs Zooniverse sends us: classifications, subjects, workflows.

``rows`` reads any export line by line into cells or quarantine entries; ``classifications``,
``subjects`` and ``workflows`` turn one export's rows into records; ``blocks`` is the fast,
columnar reader of the classification export the importer uses. Formats: ``docs/zooniverse.md``
§5. Nothing here touches the database.
"""
