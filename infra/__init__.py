"""Shared foundation: settings, event contracts, topics, embedded services, PostgreSQL storage, CLI.

Imports none of producers/, stream_agents/, training/ or models/ (the CLI composition root loads
them lazily, per command).
"""
