"""The catalog for other tools: DCAT-AP 3 (JSON-LD) and AsyncAPI 3.0."""
