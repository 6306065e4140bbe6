-- Anti-spoofing: the guest may send only from its own MAC and IPv4 address
-- (IP and ARP), plus DHCP discovery before it has an address. Everything
-- else it sends is dropped; traffic to the guest passes.
-- Set GUEST_MAC and GUEST_IP for your VM.
local GUEST_MAC, GUEST_IP = "52:54:00:12:34:56", "10.0.0.2"

settings { default = "pass" }
rule { name = "own-ipv4", dir = "from_guest", src_mac = GUEST_MAC, ethertype = "ipv4",
       src_ip = GUEST_IP }
rule { name = "own-arp", dir = "from_guest", src_mac = GUEST_MAC, ethertype = "arp",
       src_ip = GUEST_IP }
rule { name = "dhcp-discover", dir = "from_guest", src_mac = GUEST_MAC, src_ip = "0.0.0.0",
       proto = "udp", sport = 68, dport = 67 }
rule { name = "spoofed", dir = "from_guest", action = "drop" }
