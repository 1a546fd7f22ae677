"""What serving costs: a machine's price per hour spread over the inferences it serves in that hour."""

from __future__ import annotations


def cost_per_million(price_per_hour: float | None, qps: float | None) -> float | None:
    """The price of one million inferences at ``qps`` sustained (same currency as ``price_per_hour``);
    None without a price or a positive rate."""
    if price_per_hour is None or not qps or qps <= 0:
        return None
    return price_per_hour / (qps * 3600.0) * 1e6
