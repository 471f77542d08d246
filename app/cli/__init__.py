"""Thin commands: parse → call the core → render with rich, or JSON."""
