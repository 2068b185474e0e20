"""AdapterSet: the adapters of a model's matrices in one OpenVDB tree.

Each matrix owns a run of leaves of one shared tree (its id folded into the coordinates), so
the internal nodes are paid for once, not once per matrix: for the 36 small matrices of a
MiniLM model that is most of what separate trees cost. A member is a :class:`SparseAdapter`
view with the usual API; writes to it are writes to the set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import numpy as np

from .. import _validate as V
from .._atomic import atomic_write
from .._errors import CorruptFileError
from .._native import core as _core_module
from ._sparse import FORMAT_KEY, SparseAdapter, _fspath, read_vdb_file
from ._vdbfile import CRC_KEY, CRC_PLACEHOLDER, stamp_checksum

__all__ = ["AdapterSet"]

SET_FORMAT = "adapter_set/1"


class AdapterSet(Mapping[str, SparseAdapter]):
    """Named unstructured adapters (``rows x cols`` float32 each) sharing one OpenVDB tree.

    Parameters
    ----------
    shapes : mapping of str to (int, int), optional
        Members to create, in order: ``{name: (rows, cols)}``.
    allow_nonfinite : bool, default False
        Accept NaN and infinity as values in every member.

    Examples
    --------
    >>> import hyprvdb
    >>> s = hyprvdb.AdapterSet({"q": (384, 384), "ff1": (1536, 384)})
    >>> s["q"].batch_update([0, 5], [1, 300], [0.5, -1.0])
    >>> s["ff1"].set_weight(1000, 7, 2.0)
    >>> s.active_count(), len(s), s["q"].get_weight(5, 300)
    (3, 2, -1.0)
    """

    __slots__ = ("_tree", "_members", "_allow_nonfinite")

    def __init__(self, shapes: Mapping[str, tuple[int, int]] | None = None, *,
                 allow_nonfinite: bool = False) -> None:
        self._tree = _core_module().Tree()
        self._members: dict[str, SparseAdapter] = {}
        self._allow_nonfinite = bool(allow_nonfinite)
        if shapes is not None:
            if not isinstance(shapes, Mapping):
                raise TypeError(f"shapes must be a mapping of name to (rows, cols), got "
                                f"{type(shapes).__name__}")
            for name, shape in shapes.items():
                try:
                    rows, cols = shape
                except (TypeError, ValueError):
                    raise TypeError(f"shapes[{name!r}] must be a pair of ints (rows, cols), "
                                    f"got {shape!r}") from None
                self.add(name, rows, cols)

    def add(self, name: str, rows: int, cols: int) -> SparseAdapter:
        """Add an empty ``rows x cols`` member called ``name``; returns it."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__} {name!r}")
        if not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        if name in self._members:
            raise ValueError(f"name {name!r} is already a member of this set")
        rows, cols = V.matrix_dims(rows, cols)
        index = self._tree.add_matrix(rows, cols)
        view = _core_module().View(self._tree, index)
        member = SparseAdapter._wrap(view, allow_nonfinite=self._allow_nonfinite, name=name)
        self._members[name] = member
        return member

    # ---------------------------------------------------------------- mapping
    def __getitem__(self, name: str) -> SparseAdapter:
        try:
            return self._members[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a member of this set (members: "
                           f"{', '.join(map(repr, self._members)) or 'none'})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __repr__(self) -> str:
        return (f"AdapterSet({len(self)} members, active={self.active_count()}, "
                f"bytes={self.memory_usage()})")

    # ---------------------------------------------------------------- whole set
    def active_count(self) -> int:
        """Active weights of every member together."""
        return int(self._tree.active_count())

    def memory_usage(self) -> int:
        """Bytes held by the shared tree: its nodes, every member's leaf payloads, the tables,
        and malloc's per-chunk words."""
        return int(self._tree.memory_usage())

    @property
    def nbytes(self) -> int:
        """The same as :meth:`memory_usage`."""
        return self.memory_usage()

    def copy(self) -> AdapterSet:
        """An independent deep copy (one new tree)."""
        out = AdapterSet.__new__(AdapterSet)
        out._tree = self._tree.copy()
        out._allow_nonfinite = self._allow_nonfinite
        mod = _core_module()
        out._members = {
            name: SparseAdapter._wrap(mod.View(out._tree, i),
                                      allow_nonfinite=self._allow_nonfinite, name=name)
            for i, name in enumerate(self._members)}
        return out

    # ---------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> None:
        """Write a standard OpenVDB file holding one FloatGrid per member, named by the
        member, in the set's order (``vdb_print`` lists them; pyopenvdb reads each).

        Each grid carries its shape and coordinate mapping in metadata as
        :meth:`SparseAdapter.save` writes them; the file carries a CRC32 of its bytes. The
        write is atomic.
        """
        path = _fspath("path", path)
        if not self._members:
            raise ValueError("an empty AdapterSet has nothing to save (add a member first)")
        file_meta = [(FORMAT_KEY, SET_FORMAT), (CRC_KEY, CRC_PLACEHOLDER)]
        grids = [m._grid("AdapterSet") for m in self._members.values()]
        atomic_write(path, lambda tmp: _core_module().save_vdb(grids, tmp, file_meta),
                     stamp=stamp_checksum)

    @classmethod
    def load(cls, path: str | os.PathLike, *, allow_nonfinite: bool = False) -> AdapterSet:
        """Read a set written by :meth:`save`.

        Raises ``FileNotFoundError`` for a missing file, :class:`CorruptFileError` for a
        truncated or damaged one, :class:`ForeignFileError` for a file hyprvdb did not write.
        """
        path, grids = read_vdb_file(path, SET_FORMAT, "AdapterSet.load")
        out = cls(allow_nonfinite=allow_nonfinite)
        for name, rows, cols, bh, bw, r, c, v in grids:
            if (bh, bw) != (1, 1):
                raise CorruptFileError(f"{path!r}: grid {name!r} has block shape {(bh, bw)}; "
                                       f"an AdapterSet's members are unstructured (1, 1)")
            if not name or name in out:
                raise CorruptFileError(f"{path!r}: grid name {name!r} is empty or repeated")
            out.add(name, rows, cols)._fill_from_file(r, c, v, path)
        return out

    @classmethod
    def from_peft(cls, path: str | os.PathLike, *, density: float = 0.01,
                  alpha: float | None = None, shapes: Mapping[str, tuple[int, int]] | None = None,
                  allow_nonfinite: bool = False) -> AdapterSet:
        """A PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``) as a
        set, members named by their modules' state-dict names.

        SHiRA: its values and coordinates as they are (repeated coordinates summed, explicit
        zeros kept), shapes from ``shapes`` (module name -> (out, in)) or, where not given,
        the smallest that holds the indices. LoRA: each ``lora_alpha / r · B·A`` sparsified to
        its ``density`` largest entries (``SparseAdapter.from_lora``), ``alpha`` overriding
        the config's ``lora_alpha`` / ``alpha_pattern``.
        """
        from .. import _peft as P
        out = cls(allow_nonfinite=allow_nonfinite)
        for name, (n_rows, n_cols), r, c, v in P.read_peft(
                _fspath("path", path), density=V.real_scalar("density", density),
                alpha=None if alpha is None else V.real_scalar("alpha", alpha),
                shapes=dict(shapes or {})):
            out.add(name, n_rows, n_cols).batch_update(r, c, v)
        return out

    def save_shira(self, path: str | os.PathLike, *, r: int | None = None,
                   base_model: str | None = None) -> None:
        """Write the set as a PEFT SHiRA folder that ``PeftModel.from_pretrained`` loads: each
        member a layer ``(out, in)`` = its shape, named by the member (``base_model.model.``
        prepended where missing). PEFT gives every layer exactly ``r · (in + out)`` weights,
        so members with fewer are padded with explicit zeros (outputs unchanged); ``r``
        defaults to the smallest that holds every member."""
        from .. import _peft as P
        P.write_shira(_fspath("path", path),
                      [(name, m.shape, *m.active_weights()) for name, m in self.items()],
                      r=r, base_model=base_model)

    @classmethod
    def from_adapters(cls, adapters: Mapping[str, SparseAdapter], *,
                      allow_nonfinite: bool = False) -> AdapterSet:
        """A set holding a copy of each unstructured adapter, under its key."""
        if not isinstance(adapters, Mapping):
            raise TypeError(f"adapters must be a mapping of name to SparseAdapter, got "
                            f"{type(adapters).__name__}")
        out = cls(allow_nonfinite=allow_nonfinite)
        for name, a in adapters.items():
            if not isinstance(a, SparseAdapter):
                raise TypeError(f"adapters[{name!r}] must be a SparseAdapter, got "
                                f"{type(a).__name__}")
            if a.block_shape != (1, 1):
                raise ValueError(f"adapters[{name!r}] has block_shape {a.block_shape}; an "
                                 f"AdapterSet holds unstructured adapters (1, 1)")
            r, c, v = a.active_weights()
            if not allow_nonfinite and len(v) and not np.isfinite(v).all():
                raise ValueError(f"adapters[{name!r}] holds non-finite values; create the set "
                                 f"with allow_nonfinite=True to store them")
            out.add(name, *a.shape).batch_update(r, c, v)
        return out
