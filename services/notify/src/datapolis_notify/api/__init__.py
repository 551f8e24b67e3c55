"""The notify HTTP API's routes."""
