"""The stage functions (read → flag → calibrate → image → write) that every input goes through,
and the runners that call them outside the service (a Dask cluster, one file of any array)."""
