"""Importance metrics: one metric a file on a shared base; `create.create_metric` builds the
one an `importance` statement asks for."""
