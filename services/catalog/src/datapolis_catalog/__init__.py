"""datapolis catalog service.

The registry: organisations, API keys, datasets, schemas, topic provisioning, DCAT-AP
and AsyncAPI exports.
"""
