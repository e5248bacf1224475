"""TF-Serving's JSON tensor mapping (its ``util/json_tensor.cc``), for the REST client and emulator.

The rules that matter here, as TF-Serving applies them:

* a predict request names its inputs either row-wise (``"instances"``: one entry per example, an
  object of named inputs when there are several) or column-wise (``"inputs"``: a tensor, or an
  object of named tensors); the answer mirrors the form (``"predictions"`` / ``"outputs"``), and a
  single output is given bare, without its name;
* any DT_STRING value may be sent as ``{"b64": "..."}`` and is then base64-decoded; string
  *outputs* are base64-encoded that way only when the output's name ends in ``_bytes``;
* float tensors accept any JSON number, integer tensors only integers, bool only true/false.
"""
from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

B64 = "b64"


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64), str)


def encode(array: np.ndarray, b64: bool) -> Any:
    """A tensor as nested JSON lists; strings base64-wrapped when ``b64`` (else UTF-8 text)."""
    array = np.asarray(array)
    if array.dtype == object or array.dtype.kind in "SU":
        def one(value):
            value = value if isinstance(value, bytes) else str(value).encode()
            return {B64: base64.b64encode(value).decode("ascii")} if b64 else value.decode("utf-8", "replace")

        return np.vectorize(one, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def decode(value: Any, dtype: np.dtype | type | None = None) -> np.ndarray:
    """Nested JSON lists -> ndarray of ``dtype`` (``object`` for strings, b64 objects decoded)."""
    if dtype is None or np.dtype(dtype) == object:
        def walk(v):
            if isinstance(v, list):
                return [walk(x) for x in v]
            if _is_b64(v):
                return base64.b64decode(v[B64])
            if isinstance(v, str):
                return v.encode()
            raise ValueError(f"JSON value {json.dumps(v)[:60]} is not a string or a b64 object")

        decoded = walk(value)
        if not _rectangular(decoded):
            raise ValueError("string tensor lists of unequal lengths")
        out = np.empty(np.shape(decoded), dtype=object)
        out[...] = decoded
        return out
    dtype = np.dtype(dtype)
    array = np.asarray(value)
    if array.dtype == object:
        raise ValueError("tensor lists of unequal lengths or mixed types")
    if dtype.kind in "iu" and array.dtype.kind not in "iub" and array.size:
        raise ValueError(f"expected integers for a {dtype} tensor")
    return array.astype(dtype)


def _rectangular(nested) -> bool:
    if not isinstance(nested, list):
        return True
    if nested and isinstance(nested[0], list):
        return all(isinstance(x, list) and len(x) == len(nested[0]) and _rectangular(x) for x in nested)
    return not any(isinstance(x, list) for x in nested)


# ------------------------------------------------------------------------------ requests
def predict_request(signature: str, inputs: dict[str, np.ndarray]) -> dict:
    """The columnar request a client sends (strings always b64: image bytes are binary)."""
    return {"signature_name": signature, "inputs": {k: encode(v, b64=True) for k, v in inputs.items()}}


def parse_predict_request(body: dict, input_dtypes: dict[str, np.dtype]) -> tuple[dict[str, np.ndarray], str]:
    """(inputs, "row" | "columnar") from a request body, given the signature's input dtypes."""
    if ("instances" in body) == ("inputs" in body):
        raise ValueError("expecting exactly one of 'instances' or 'inputs'")
    names = sorted(input_dtypes)
    if "inputs" in body:
        value = body["inputs"]
        if isinstance(value, dict) and not _is_b64(value):
            missing = [n for n in names if n not in value]
            if missing:
                raise ValueError(f"Missing named input: {missing[0]} in 'inputs' object.")
            return {n: decode(value[n], input_dtypes[n]) for n in names}, "columnar"
        if len(names) != 1:
            raise ValueError("inputs is a plain value/list, but expecting an object as multiple input tensors")
        return {names[0]: decode(value, input_dtypes[names[0]])}, "columnar"
    rows = body["instances"]
    if not isinstance(rows, list) or not rows:
        raise ValueError("'instances' must be a non-empty list")
    if isinstance(rows[0], dict) and not _is_b64(rows[0]):
        if any(set(r) != set(names) for r in rows):
            raise ValueError(f"each instance must have exactly the keys {', '.join(names)}")
        return {n: decode([r[n] for r in rows], input_dtypes[n]) for n in names}, "row"
    if len(names) != 1:
        raise ValueError("instances is a plain list, but expecting list of objects as multiple input tensors")
    return {names[0]: decode(rows, input_dtypes[names[0]])}, "row"


# ------------------------------------------------------------------------------ responses
def predict_response(outputs: dict[str, np.ndarray], form: str) -> dict:
    """The server's answer: ``predictions`` (row) or ``outputs`` (columnar); one output unnamed."""
    encoded = {k: encode(v, b64=k.endswith("_bytes")) for k, v in sorted(outputs.items())}
    if form == "columnar":
        return {"outputs": encoded if len(encoded) > 1 else next(iter(encoded.values()))}
    sizes = {len(v) for v in encoded.values()}
    if len(sizes) != 1:
        raise ValueError("outputs have inconsistent batch sizes; use the columnar ('inputs') request format")
    rows = [{k: v[i] for k, v in encoded.items()} for i in range(sizes.pop())]
    return {"predictions": rows if len(encoded) > 1 else [next(iter(r.values())) for r in rows]}


def parse_predict_response(body: dict, output_names: tuple[str, ...]) -> dict[str, Any]:
    """{output name: JSON value} from a columnar answer (a single output comes back unnamed)."""
    if "outputs" not in body:
        raise ValueError(f"response has no 'outputs': {json.dumps(body)[:200]}")
    outputs = body["outputs"]
    if len(output_names) == 1 and not (isinstance(outputs, dict) and output_names[0] in outputs):
        return {output_names[0]: outputs}
    return dict(outputs)
