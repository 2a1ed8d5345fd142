"""Running on a cluster of spot or preemptible nodes."""
