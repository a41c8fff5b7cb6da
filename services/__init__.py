"""The chat services, one package each, each run as its own process (`python -m services.<name>`)."""
