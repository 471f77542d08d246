"""The local memory overlay: what sessions learn, kept in one SQLite file.

The seed runs this as a "local-memory daemon"; here it is an in-process library over one
SQLite file (WAL), opened by whoever needs it (CLI, Stage0, the pipeline).

- :mod:`app.memory.store`: :class:`MemoryStore`, the one door, over the concern modules:
  :mod:`~app.memory.memories`, :mod:`~app.memory.search`, :mod:`~app.memory.vectors`,
  :mod:`~app.memory.playbook` and :mod:`~app.memory.outcomes`, sharing one connection
  (:mod:`app.memory.db`: the project's SQLite runner, and the versioned
  :mod:`~app.memory.migrations`);
- :mod:`app.memory.embeddings`: sentence-transformers embedders (bge-m3, audited fallback);
- :mod:`app.memory.harvest`: commits and session outcomes into memories, idempotently.

Importing this package is cheap: nothing heavy (torch, sentence_transformers, sklearn)
loads until a function needs it.
"""
