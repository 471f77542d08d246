"""Switchyard: a local-first model router and terminal workbench for AI coding sessions."""

from app import native as _native

__version__ = "0.1.0"

# Before any other module of the package is imported: a compiled module runs only when it
# is its source's (app/native.py).
_native.install()
