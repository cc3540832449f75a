"""Events of the crowd side, for whoever drives the loop above it (``loop.receivers``).

Each is sent once its change has committed (``transaction.on_commit``), so a receiver that
queues work never sees a change that was rolled back. annotate imports nothing above it: the
pipeline listens here instead of being called from here.
"""

from __future__ import annotations

from django.dispatch import Signal

#: New classifications were stored. kwargs: ``workflow_id`` (Zooniverse id), ``created``
#: (rows new to the database), ``source`` ("pull" or "export file").
votes_stored = Signal()

#: Votes stored earlier were linked to their items (their subjects' items arrived later).
#: kwargs: ``subjects`` (subjects linked), ``votes`` (votes that now count).
votes_linked = Signal()

#: Curators decided on items (accept, edit, reject). kwargs: ``item_ids``, ``n`` (decisions).
reviews_recorded = Signal()

#: Items' prior labels (an earlier enrichment) changed in an import (sent after commit).
#: kwargs: ``item_ids`` (the items whose prior labels were added to or taken from).
prior_labels_changed = Signal()

#: The crowd's labels were rewritten (sent after the aggregation's transactions committed).
#: kwargs: ``item_ids`` (the items of an incremental pass, or None after a full pass).
labels_aggregated = Signal()

#: Volunteers were excluded from aggregation, or taken back (sent after commit). Their votes
#: drop out of, or return to, every item's labels only with a full pass. kwargs:
#: ``volunteer_ids`` (those whose state changed), ``excluded`` (True: excluded; False: taken back).
volunteers_excluded = Signal()
