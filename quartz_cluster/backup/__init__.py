"""Backups and restores (DESIGN §13, ADR 17)."""
