"""datapolis notify service.

Subscriptions and delivery: signed webhooks, server-sent events and per-consumer topics,
under consent.
"""
