"""The small ONNX graph builder behind the encoder and generator exports (onnx imported on first use)."""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np


class Graph:
    """Appends nodes and initialisers for ``onnx.helper.make_graph``."""

    def __init__(self):
        from onnx import helper, numpy_helper
        self._helper, self._np = helper, numpy_helper
        self.nodes: list = []
        self.inits: list = []

    def const(self, name: str, arr) -> str:
        """An initialiser (float64 stored as float32; 0-d arrays stay 0-d); returns its name."""
        arr = np.asarray(arr)
        arr = arr.astype(np.float32) if arr.dtype == np.float64 else arr
        self.inits.append(self._np.from_array(np.require(arr, requirements="C"), name))
        return name

    def node(self, op: str, inputs: Sequence[str], out: str, domain: Optional[str] = None, **attrs) -> str:
        """A node with one output, named like the node; returns the output's name."""
        return self.node_outputs(op, inputs, [out], out, domain, **attrs)[0]

    def node_outputs(self, op: str, inputs: Sequence[str], outputs: Sequence[str], name: str,
                     domain: Optional[str] = None, **attrs) -> List[str]:
        """A node with the given output names ("" for an optional output left out)."""
        self.nodes.append(self._helper.make_node(op, list(inputs), list(outputs), name=name, domain=domain, **attrs))
        return list(outputs)
