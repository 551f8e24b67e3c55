"""What decides a delivery: notify's knowledge of datasets, agreements and
consents, and whether a consumer may receive a record now, and which fields.

- :mod:`.view`: the in-memory :class:`~.view.Entitlements` (the
  ``EntitlementView`` of :mod:`datapolis_notify.ports`), pure;
- :mod:`.feed`: keeps a view current in any process and proves it
  (:func:`~.feed.start_entitlements`);
- :mod:`.projection`: the worker's PostgreSQL projection and its snapshot
  (:func:`~.projection.start_entitlement_projection`).
"""
