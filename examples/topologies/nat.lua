-- A private network 10.0.0.0/24 behind NAT on re1. netbe's dnsmasq hands
-- out 10.0.0.100-10.0.0.199; the masquerade rule lives in netbe's own pf
-- anchor (FreeBSD) or nft table (Linux). On FreeBSD, /etc/pf.conf must
-- contain:   nat-anchor "netbe/*"   and   anchor "netbe/*"
name = "natlab"

switches = {
  natnet = {
    type = "nat",
    address = "10.0.0.1/24",
    outbound = "re1",
    dhcp = { range = { "10.0.0.100", "10.0.0.199" }, lease = "1h" },
  },
}

vms = {
  app = { nics = { { switch = "natnet", ifname = "tap2", mac = "58:9c:fc:00:00:02" } } },
}
