"""What tests share: the in-process sandbox harness, a real server and its signing
client, and checks of its answers. Tests import these; no test imports another."""
