"""The backends, one package each: its event store, snapshots, read models and whatever
else it offers (leases, wake-ups, inline projections). `eventfold.connect` finds them
through the table in `eventfold.store` (`register_backend`); importing this package loads
no backend."""

__all__: list[str] = []
