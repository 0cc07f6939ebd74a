"""Body models: loading, the stateless layer, joint conventions and bundled assets."""
