"""`hub demo`: a simulated healthcare backend, a MongoDB-wire store and Prometheus around a real hub.

Not part of the product package `hub`: it ships beside it and needs the `demo` extra (SecantusDB).
"""
