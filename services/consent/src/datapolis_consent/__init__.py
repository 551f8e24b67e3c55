"""datapolis consent service.

Agreements between producers and consumers, and data-subject consents, kept as an
append-only ledger.
"""
