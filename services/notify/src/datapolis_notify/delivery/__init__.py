"""The delivery engine: dataset records to the subscriptions entitled to them.

- ``records``: the pure core (a record as read, filters, projections,
  CloudEvents batches, stable message ids);
- ``offsets``: which Kafka offsets may be committed;
- ``store``: the delivery log, the durable queue, endpoint health and
  subscriptions in PostgreSQL;
- ``channels``: webhook and Kafka channels behind one protocol;
- ``engine``: batching per subscription, ordering per key, retries from the
  queue, entitlement decided at every attempt;
- ``consumer``: the Kafka edge that feeds the engine and commits offsets.
"""
