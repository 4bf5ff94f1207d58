"""Business source: the seed's appointment metrics from MongoDB, read-only, aggregates only.

pipeline: the full one-aggregation answer (the oracle); buckets: per-hour aggregates and their merge;
changes: the change stream; tracker: marks hours dirty from it (or reconciles without one);
client: driver options and readable errors;
source: BusinessSource, which ties them together.
"""

from hub.sources.business.client import (
    DEFAULT_DATABASE,
    client_options,
    describe_error,
    driver_deadline,
)
from hub.sources.business.pipeline import build_pipeline, fold_small_cells, shape_result
from hub.sources.business.source import BusinessSource
from hub.sources.business.tracker import MODES
from hub.vocab import WINDOWS

__all__ = [
    "DEFAULT_DATABASE", "MODES", "WINDOWS", "BusinessSource", "build_pipeline", "client_options", "describe_error",
    "driver_deadline", "fold_small_cells", "shape_result",
]
