"""Quality assurance: gates per stage, source finding and cross-match against a sky catalogue,
forced photometry and variability, alerts, and diagnostic plots."""
