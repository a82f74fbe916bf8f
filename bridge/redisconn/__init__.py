"""Redis plumbing shared by the broker and the cluster coordination: URLs, clients, the
pub/sub keeper."""
