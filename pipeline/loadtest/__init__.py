"""``pipeline loadtest``: streams a corpus with many clients and measures what users feel."""
