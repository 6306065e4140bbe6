-- Everything at once: a VLAN trunk bridge with an address and jumbo MTU,
-- an existing bridge used as is, private ports, a slirp NIC and a stream
-- NIC for a netbe embedder.
name = "lab"

switches = {
  trunk = { type = "bridge", uplink = "re1", vlan = 20, address = "192.168.20.1/24",
            mtu = 9000, private = true },
  lan = { type = "existing", interface = "bridge0" },
}

vms = {
  build = { nics = {
    { switch = "trunk", ifname = "tap10", mac = "58:9c:fc:00:00:10" },
    { switch = "lan", ifname = "tap11" },
    { type = "slirp", hostfwd = { "tcp::2222-:22" } },
  } },
  agent = { nics = {
    { type = "stream", connect = "unix:/run/agent.sock" },
  } },
}
