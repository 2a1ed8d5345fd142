"""The service's moving parts that need no HTTP: the conductor that runs task threads."""
