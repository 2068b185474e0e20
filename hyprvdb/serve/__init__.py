"""Serving a model whose sparse adapters keep learning: :class:`MiniLM` (all-MiniLM-L6-v2 in
JAX), :class:`AdaptiveEncoder` (the model, its history and the serving state), the HTTP app
(:func:`create_app`, :func:`serve`) and the demo (:func:`run_demo`).

Importing this package imports JAX; ``import hyprvdb`` does not import it.
"""

from ._app import create_app, serve
from ._demo import doc_pairs
from ._demo import run as run_demo
from ._encoder import AdaptiveEncoder, ServingState
from ._model import LINEARS, MiniLM, contrastive_loss, default_model_path

__all__ = ["AdaptiveEncoder", "LINEARS", "MiniLM", "ServingState", "contrastive_loss",
           "create_app", "default_model_path", "doc_pairs", "run_demo", "serve"]
