//! outpost-certs: the cluster certificate authority and TLS configuration.
