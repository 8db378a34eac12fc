-- Router node (clusters with topology = "router"): it relays messages
-- between the other nodes by destination and tells every node who joins and
-- leaves; the host does that. Its Lua only declares what it is (its schema's
-- digest is checked against every node that connects).
base.init("Router")
INFO("Router ready")
