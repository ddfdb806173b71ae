-- The MACs each machine reported, one row each, so that a boot request
-- finds its machine by one index read (Store.MachineByMAC) instead of a
-- scan of every machine's macs. The rows are derived from machines.macs
-- and registered_at, and written in the transaction that writes them
-- (Tx.InsertMachine, Tx.UpdateMachine). The key orders a MAC's machines
-- by registration: the newest, which wins, is the last entry of its
-- range. The unique index keeps a machine's MACs together, for rewriting
-- them; a machine deleted takes its rows along.
CREATE TABLE machine_macs (
    -- As in machines.macs: lower-case, colon-separated.
    mac           TEXT NOT NULL,
    -- The machine's registered_at (Unix nanoseconds).
    registered_at BIGINT NOT NULL,
    machine_id    TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    PRIMARY KEY (mac, registered_at, machine_id),
    UNIQUE (machine_id, mac)
);
INSERT INTO machine_macs (mac, registered_at, machine_id)
    SELECT DISTINCT mac, machines.registered_at, machines.id
    FROM machines, json_array_elements_text(machines.macs::json) AS mac;
