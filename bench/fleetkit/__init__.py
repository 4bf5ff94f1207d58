"""Parts of the large-fleet benchmark (`python -m bench.fleet`): fake Prometheus, wire counter, page probe, load client."""
