-- Every switch type and NIC type, VLANs, DHCP, a returned table.
return {
  name = "fz",
  switches = {
    lan = { type = "bridge", uplink = "eth0", vlan = 30, address = "10.9.0.1/24", mtu = 1500 },
    out = { type = "nat", address = "192.168.99.1/24", outbound = "eth0",
            dhcp = { range = { "192.168.99.10", "192.168.99.20" }, lease = "1h" } },
    ng = { type = "netgraph", uplink = "em0", persistent = true, autolink = true },
    old = { type = "existing", interface = "br9" },
  },
  vms = {
    a = { nics = {
      { switch = "lan", ifname = "tap90", mac = "58:9c:fc:00:00:90", slot = "5:0" },
      { switch = "out", type = "veth", vlan = 7, private = true },
      { switch = "ng", type = "ngd" },
      { switch = "old" },
      { type = "slirp", hostfwd = { "tcp::2290-:22", "udp::5353-:53" } },
      { type = "stream", connect = "127.0.0.1:5000" },
    } },
    b = { nics = { { switch = "ng", type = "netgraph", link = "link3" } } },
  },
}
