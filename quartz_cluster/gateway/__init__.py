"""The HTTP/JSON gateway (DESIGN §11), served by the router process itself."""
