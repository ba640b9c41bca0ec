-- `mirrorctl prune` deletes idempotency keys by age.
CREATE INDEX mirror_applied_events_applied_at ON mirror_applied_events (applied_at);
