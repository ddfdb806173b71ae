-- Full-mode DHCP leases (boot/dhcp): bound and declined addresses, so a
-- restart hands no address to a second client. Offers are not stored.
CREATE TABLE dhcp_leases (
    ip         TEXT PRIMARY KEY,
    mac        TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('bound', 'declined')),
    expires_at BIGINT NOT NULL -- Unix milliseconds
);
CREATE INDEX dhcp_leases_mac ON dhcp_leases (mac);
