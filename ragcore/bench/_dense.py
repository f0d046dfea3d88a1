"""Dense engine adapters: ragcore.DenseIndex (float32, and its float16 / int8 / prefilter variants),
faiss-cpu ``IndexFlatIP`` and numpy brute force (matmul + argpartition), all exact inner-product top-k on
unit vectors; the same interface as the sparse adapters (``_sparse.Engine``) with vectors for texts.
"""
from __future__ import annotations

import numpy as np

from ._machine import dir_bytes
from ._sparse import Engine, topk_rows


class _Dense(Engine):
    mode = "dense"
    family = "dense"
    tok_kind = "vectors"
    bytes_per_value, row_extra = 4, 0   # what one query reads per row: values, and bytes beside them

    @classmethod
    def bytes_per_row(cls, dim: int) -> int:
        """Bytes of the collection one query reads per row (for GB/s figures)."""
        return cls.bytes_per_value * dim + cls.row_extra

    def text1(self, q, k):
        return self.text(q[None, :], k)[0]

    def tok(self, qs, k):   # no pre-tokenized form: vectors are the input
        return self.text(qs, k)

    tok1 = text1


class RagcoreDense(_Dense):
    key = "ragcore-dense"
    dtype, prefilter = "float32", None
    has_filter = True

    def build(self, x):
        from .. import DenseIndex

        self.m = DenseIndex(x.shape[1], metric="ip", dtype=self.dtype, device="cpu",
                            prefilter=self.prefilter).add(x)

    def save(self):
        self.m.save(str(self.workdir / "index"))
        return dir_bytes(self.workdir / "index"), "on disk"

    def load(self, x):
        from .. import DenseIndex

        self.m = DenseIndex.load(str(self.workdir / "index"), device="cpu")

    def text1(self, q, k):
        return self.m.search(q, k=k, threads=self.threads).indices[0]

    def text(self, qs, k):
        return self.m.search(qs, k=k, threads=self.threads).indices

    def filtered(self, qs, k, mask):
        return self.m.search(qs, k=k, threads=self.threads, filter=mask).indices


class RagcoreDenseF16(RagcoreDense):
    key = "ragcore-dense-float16"
    dtype = "float16"
    bytes_per_value = 2
    has_filter = False


class RagcoreDenseInt8(RagcoreDense):
    key = "ragcore-dense-int8"
    dtype = "int8"
    has_filter = False
    bytes_per_value, row_extra = 1, 8   # codes, then scale and L1 per row


class RagcoreDensePrefilter(RagcoreDense):
    key = "ragcore-dense-prefilter"
    prefilter = "int8"
    has_filter = False
    bytes_per_value, row_extra = 1, 16   # what one query scans: the int8 codes and their 4 floats per row


class Faiss(_Dense):
    key = "faiss"
    requires = (("faiss", "faiss-cpu"),)

    def build(self, x):
        import faiss

        self.faiss = faiss
        self.m = faiss.IndexFlatIP(x.shape[1])
        self.m.add(np.ascontiguousarray(x, dtype=np.float32))
        self.set_threads(self.threads)

    def set_threads(self, threads):
        self.threads = threads
        if hasattr(self, "faiss"):
            self.faiss.omp_set_num_threads(threads)

    def save(self):
        path = self.workdir / "index.faiss"
        self.faiss.write_index(self.m, str(path))
        return path.stat().st_size, "on disk"

    def load(self, x):
        import faiss

        self.faiss = faiss
        self.m = faiss.read_index(str(self.workdir / "index.faiss"))
        self.set_threads(self.threads)

    def text(self, qs, k):
        return self.m.search(qs, min(k, self.m.ntotal))[1]


class Numpy(_Dense):
    key = "numpy"

    def build(self, x):
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self._limits = None
        self.set_threads(self.threads)

    def set_threads(self, threads):
        self.threads = threads
        try:   # numpy's BLAS: pinned here too (the environment variables pin it at start)
            from threadpoolctl import threadpool_limits
        except ImportError:
            return
        self._limits = threadpool_limits(threads)

    def save(self):
        return self.x.nbytes, "RAM only (the float32 rows)"

    def text(self, qs, k):
        return topk_rows(qs @ self.x.T, k)


DENSE = {c.key: c for c in (RagcoreDense, RagcoreDensePrefilter, RagcoreDenseF16, RagcoreDenseInt8, Faiss, Numpy)}
