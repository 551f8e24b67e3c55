"""datapolis ingest service.

Producers push records over HTTP or Kafka; each is validated, deduplicated and written
to its dataset topic.
"""
