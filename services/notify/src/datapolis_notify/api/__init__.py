"""Notify's HTTP routes."""
