"""Stage0: deterministic retrieval (TF-IDF + MMR), the task brief, citation checks.

No LLM anywhere. The façade is :class:`app.stage0.engine.Stage0`; import it from there
(this package's import stays light: no numpy, scipy or scikit-learn until a query).
"""

from app.stage0.context import context_estimate

__all__ = ["context_estimate"]
