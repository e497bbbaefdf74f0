"""The parties at run time: servers, the holder's client, key modules and the connections."""
