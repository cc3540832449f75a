"""The curator's web admin for the crowd side: lists that load in a few queries, images inline.

One module per family of screens; importing them registers their ModelAdmins on the admin site.
"""

from annotate.admin import (  # noqa: F401
    import_reports,
    items,
    releases,
    rounds,
    volunteers,
)
