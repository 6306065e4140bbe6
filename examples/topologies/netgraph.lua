-- A netgraph bridge on re0 (FreeBSD): the uplink's lower and upper hooks
-- go into bnet0's link0 and link1; the VM's NIC takes link2.
--   netbe apply netgraph.lua          netbe bhyve-args netgraph.lua --vm web
name = "ngdemo"

switches = {
  bnet0 = { type = "netgraph", uplink = "re0" },
}

vms = {
  web = { nics = { { switch = "bnet0", slot = "2:0" } } },
}
