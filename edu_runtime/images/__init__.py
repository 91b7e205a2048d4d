"""Images: references, the content-addressed store, layers, archives and base images."""
