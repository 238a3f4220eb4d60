"""Jobs (index, cluster, push, serve) that compose the layers below and report progress through callbacks."""
