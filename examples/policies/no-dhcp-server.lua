-- No DHCP server in the guest: drop DHCPv4 offers and acks (UDP 67 -> 68)
-- and DHCPv6 server replies (UDP 547 -> 546) that the guest sends.
settings { default = "pass" }
rule { name = "dhcp4-server", dir = "from_guest", proto = "udp", sport = 67, dport = 68,
       action = "drop" }
rule { name = "dhcp6-server", dir = "from_guest", proto = "udp", sport = 547, dport = 546,
       action = "drop" }
