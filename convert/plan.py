"""The plan: which layers keep softmax attention and which become mixers.

``--keep-attention`` accepts: nothing (convert every layer); a list of layer indices ``"0,15,29"``
(negative indices count from the end); every k-th layer ``"every:4"`` (layers 3, 7, ...: the last of
each group of k); a fraction ``"0.25"`` (that share of layers, spread evenly); or ``"auto:N"``: the N layers whose
attention heads are least local on calibration text (``convert.calibration``), chosen at conversion.
"""

from linearize.errors import LinearizeError


class PlanError(LinearizeError):
    pass


def auto_count(spec, num_layers):
    """N for an ``auto:N`` spec (validated), else None."""
    if not isinstance(spec, str) or not spec.strip().startswith("auto:"):
        return None
    try:
        n = int(spec.strip().split(":", 1)[1])
    except ValueError:
        n = -1
    if not 0 <= n <= num_layers:
        raise PlanError(f"bad --keep-attention {spec!r}: auto:N needs a whole number N from 0 to {num_layers}")
    return n


def parse_keep_attention(spec, num_layers, recency=None):
    """Sorted list of layer indices that keep softmax attention. ``auto:N`` needs ``recency``
    ([layers, heads], from ``convert.calibration.head_recency``); without it only the spec is checked."""
    if spec is None or (isinstance(spec, str) and spec.strip() in ("", "none")):
        return []
    if isinstance(spec, (list, tuple)):
        return _indices(list(spec), num_layers, spec)
    n = auto_count(spec, num_layers)
    if n is not None:
        if recency is None:
            return []
        from linearize.convert.calibration import rank_layers

        return rank_layers(recency, n)
    spec = str(spec).strip()
    if spec.startswith("every:"):
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError:
            k = 0
        if k < 1:
            raise PlanError(f"bad --keep-attention {spec!r}: every:K needs a whole number K >= 1")
        return list(range(k - 1, num_layers, k))
    if "." in spec:
        try:
            fraction = float(spec)
        except ValueError:
            fraction = -1.0
        if not 0.0 <= fraction <= 1.0:
            raise PlanError(f"bad --keep-attention {spec!r}: a fraction must lie between 0 and 1")
        count = round(fraction * num_layers)
        if count == 0:
            return []
        # Spread evenly, ending at the last layer (as hybrid recipes interleave attention).
        return sorted({num_layers - 1 - round(j * num_layers / count) for j in range(count)})
    try:
        items = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise PlanError(
            f"bad --keep-attention {spec!r}: use layer indices '0,5,-1', 'every:K', a fraction like '0.25' or 'auto:N'"
        ) from None
    return _indices(items, num_layers, spec)


def _indices(items, num_layers, spec):
    out = set()
    for i in items:
        j = i + num_layers if i < 0 else i
        if not 0 <= j < num_layers:
            raise PlanError(
                f"bad --keep-attention {spec!r}: layer {i} is out of range for a model with {num_layers} layers "
                f"(use 0..{num_layers - 1} or -{num_layers}..-1)"
            )
        out.add(j)
    return sorted(out)
