-- A bridge on the physical interface re1; the VM's tap joins it, so the VM
-- sits on the same LAN as the host.
name = "bridged"

switches = {
  brext = { type = "bridge", uplink = "re1" },
}

vms = {
  db = { nics = { { switch = "brext", ifname = "tap1", slot = "5" } } },
}
