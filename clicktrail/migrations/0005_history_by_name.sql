-- The history of one call type and name, newest first: what `clicktrail schemas try` and
-- `schemas infer` read within a time window, stopping at their limit, and how they find the
-- names of a call type (one descent each). Every day's partition gets it.
CREATE INDEX event_history_type_event_received_at ON event_history (type, event, received_at);
