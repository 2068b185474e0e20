"""Serving a model whose sparse adapters keep learning: :class:`MiniLM` (all-MiniLM-L6-v2 in
JAX), :class:`MergedWeights` (a history's adapter merged into a model's weights, moved between
steps in place), :class:`WeightsLock` (forward passes or an update, never both),
:class:`AdaptiveEncoder` (the model, its history and its live weights), :class:`Follower`
(a read-only replica of a history another process writes), the HTTP app
(:func:`create_app`, :func:`serve`) and the demo (:func:`run_demo`).

Importing this package imports JAX; ``import hyprvdb`` does not import it.
"""

from ._app import create_app, serve
from ._demo import doc_pairs
from ._demo import run as run_demo
from ._encoder import AdaptiveEncoder
from ._follow import Follower
from ._lock import WeightsLock
from ._merged import MergedWeights, merge_from_scratch
from ._model import LINEARS, MiniLM, contrastive_loss, default_model_path

__all__ = ["AdaptiveEncoder", "Follower", "LINEARS", "MergedWeights", "MiniLM", "WeightsLock",
           "contrastive_loss", "create_app", "default_model_path", "doc_pairs",
           "merge_from_scratch", "run_demo", "serve"]
