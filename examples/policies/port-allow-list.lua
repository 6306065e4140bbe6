-- An allow-list of ports: to the guest only SSH, HTTP and HTTPS may open
-- TCP connections; replies to the guest's own connections, ICMP, ARP and
-- IPv6 neighbour discovery pass; all other traffic to the guest is dropped.
settings { default = "drop" }
rule { name = "from-guest", dir = "from_guest", action = "pass" }
rule { name = "arp", ethertype = "arp" }
rule { name = "icmp", proto = "icmp" }
rule { name = "icmpv6", proto = "icmpv6" }
rule { name = "ssh", dir = "to_guest", proto = "tcp", dport = 22 }
rule { name = "web", dir = "to_guest", proto = "tcp", dport = { 80, 80 } }
rule { name = "https", dir = "to_guest", proto = "tcp", dport = 443 }
rule { name = "tcp-replies", dir = "to_guest", proto = "tcp", tcp_flags = "!syn" }
rule { name = "udp-replies", dir = "to_guest", proto = "udp", sport = 53 }
