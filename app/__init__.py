"""Switchyard: a local-first model router and terminal workbench for AI coding sessions."""

__version__ = "0.1.0"
