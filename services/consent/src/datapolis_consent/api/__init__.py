"""consent's HTTP routes."""
