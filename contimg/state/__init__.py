"""The service's state under ``<root>/state``: the ingest queue, the calibration registry, the
products database, the root's lock and its recorded configuration. The only package that
speaks SQL."""
