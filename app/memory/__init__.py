"""The local memory overlay: what sessions learn, kept in one SQLite file.

The seed runs this as a "local-memory daemon"; here it is an in-process library over one
SQLite file (WAL), opened by whoever needs it (CLI, Stage0, the pipeline).

- :mod:`app.memory.store`: memories, their vectors, search, playbook bullets, outcomes;
- :mod:`app.memory.embeddings`: sentence-transformers embedders (bge-m3, audited fallback);
- :mod:`app.memory.harvest`: commits and session outcomes into memories, idempotently.

Importing this package is cheap: nothing heavy (torch, sentence_transformers, sklearn)
loads until a function needs it.
"""
