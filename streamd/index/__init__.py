"""The feature library: PaddleX-compatible files, build/append/remove, search and the decision.

faiss is imported only when a library is created, loaded or saved.
"""

from streamd.index.decision import decide
from streamd.index.library import FeatureLibrary, library_lock

__all__ = ["FeatureLibrary", "decide", "library_lock"]
