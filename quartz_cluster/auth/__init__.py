"""The front door (DESIGN §11): API keys, tenants and roles for clients; cluster credentials
(the cluster secret, member tokens, etcd's password) for the internal plane."""
