"""Outgoing datasets: which items and labels an export holds (``records``), the files they are
written to (``writers``), and a one-format export with its manifest (``export``). Releases
(``annotate.services.releases``) write all formats at once from the same parts."""
